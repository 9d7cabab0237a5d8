"""The pages read only what they show: a few images' maps, the region masses, a sample for the colour scale,
and each equals what the full read gave before (on the planted run of `workspace_builder`, two shards)."""
import numpy as np
import pytest

from workspace_builder import N_IMAGES, build_workspace  # noqa: E402


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("reads") / "workspace"
    return root, build_workspace(root)


@pytest.fixture
def data(planted, monkeypatch):
    import streamlit as st

    from dashboard import data

    monkeypatch.setenv("SALIENCY_AUDIT_WORKSPACE", str(planted[0]))
    st.cache_data.clear()
    st.cache_resource.clear()
    return data


def test_maps_of_gives_the_stored_maps_of_the_asked_images_only(planted, data):
    run_id = planted[1]["runs"][0]
    version = data.version(run_id)
    ids, maps = data.saliency_maps(run_id, version)
    assert list(ids) == list(range(N_IMAGES))
    picked = data.maps_of(run_id, version, (11, 2, 7))  # images in both shards, out of order
    assert sorted(picked) == [2, 7, 11]
    for image_id, saliency in picked.items():
        assert saliency.dtype == np.float32
        np.testing.assert_array_equal(saliency, maps[image_id])
    assert saliency.max() == pytest.approx(0.8, abs=1e-3)  # image 11: not caged, the animal holds 0.8 (float16)
    assert data.maps_of(run_id, version, (99,)) == {}  # an image the run did not explain: no map


def test_map_scale_reads_a_sample_of_maps_and_equals_the_full_scale_below_it(planted, data, monkeypatch):
    from dashboard.overlay import display_scale

    run_id = planted[1]["runs"][0]
    version = data.version(run_id)
    maps = data.saliency_maps(run_id, version)[1]
    assert data.map_scale(run_id, version) == display_scale(maps)  # 12 maps: the sample is all of them
    # v1's caged images (0-5, the first shard) put 0.7 x 4 = 2.8 on the cage's strip: the 99th percentile
    assert data.map_scale(run_id, version) == pytest.approx(2.8, abs=0.01)
    monkeypatch.setattr(data, "MAP_SCALE_SAMPLE", 6)
    data.map_scale.clear()
    assert data.map_scale(run_id, version) == display_scale(maps[:6])
    # v2: a sample of one caged image (animal 0.72) misses the uncaged images' 0.8: the sample is what is read
    v2 = planted[1]["runs"][1]
    monkeypatch.setattr(data, "MAP_SCALE_SAMPLE", 1)
    data.map_scale.clear()
    assert data.map_scale(v2, data.version(v2)) == pytest.approx(0.72, abs=1e-3)
    monkeypatch.setattr(data, "MAP_SCALE_SAMPLE", 1024)
    data.map_scale.clear()
    assert data.map_scale(v2, data.version(v2)) == pytest.approx(0.8, abs=1e-3)


def test_region_masses_are_the_gallery_tables_masses_and_pick_the_same_picture(planted, data):
    from dashboard import views

    run_id = planted[1]["runs"][0]
    version = data.version(run_id)
    masses = data.region_masses(run_id, version)
    gallery = data.gallery_table(run_id, version)
    columns = ["image_id", "mass.animal", "mass.background", "mass.cage"]
    assert sorted(masses.columns) == columns
    np.testing.assert_allclose(masses.sort_values("image_id")[columns].to_numpy(dtype=float),
                               gallery.sort_values("image_id")[columns].to_numpy(dtype=float))
    assert views.exemplar_image(masses, "cage") == views.exemplar_image(gallery, "cage") == 0  # first caged image
    assert masses.loc[masses.image_id == 0, "mass.cage"].item() == pytest.approx(0.7)
