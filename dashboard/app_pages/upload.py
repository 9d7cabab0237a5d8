"""Upload: a model file with its card, and a dataset zip, each checked before anything is stored.

The model is inspected by a subprocess (`analysis.inspect_model`): this process never loads it.
Problems are shown under the field they concern, in the engine's own words.
"""
import hashlib
import json

import streamlit as st

from dashboard import data, state, views
from explainers.errors import InputError

TASKS = ["classification", "multilabel", "segmentation", "detection"]
IMAGENET_MEAN, IMAGENET_STD = "0.485, 0.456, 0.406", "0.229, 0.224, 0.225"

st.title("Upload")
st.caption(f"Files up to {st.get_option('server.maxUploadSize')} MB each (`server.maxUploadSize` in "
           "dashboard/.streamlit/config.toml). A larger dataset need not pass through the browser: "
           "`saliency-audit run --data FOLDER` registers it from disk.")
errors: dict = st.session_state[state.UPLOAD_ERRORS]


def forget_errors(*fields: str):
    """An `on_change` callback: a new file clears the errors about the old one before the page draws them."""
    return lambda: [st.session_state[state.UPLOAD_ERRORS].pop(f, None) for f in fields]


def field_error(field: str) -> None:
    if errors.get(field):
        st.error(views.plain(errors[field]))


def floats(text: str, field: str, count: int) -> list[float] | None:
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) != count:
        errors[field] = f"Give {count} numbers separated by commas, for example {IMAGENET_MEAN}."
        return None
    return values


st.header("Model")
model_file = st.file_uploader("Model file (.pt2 recommended; .pt/.pth/.safetensors state dict; .ts TorchScript; "
                              ".zip of a Hugging Face save_pretrained folder: its card comes from config.json)",
                              type=["pt2", "pt", "pth", "safetensors", "ts", "zip"], key="upload_model",
                              on_change=forget_errors("model", "card", "target_layer", "architecture", "classes",
                                                      "mean", "std"))
field_error("model")
card_file = st.file_uploader("Model card (model.json), optional: fill the form below when you have none",
                             type=["json"], key="upload_card", on_change=forget_errors("card"))
field_error("card")

with st.expander("Model card", expanded=card_file is None):
    task = st.selectbox("Task", TASKS, key="card_task")
    classes_text = st.text_area("Classes, one per line, in the model's output order", key="card_classes")
    field_error("classes")
    c1, c2 = st.columns(2)
    height = c1.number_input("Input height", min_value=8, max_value=4096, value=224, key="card_h")
    width = c2.number_input("Input width", min_value=8, max_value=4096, value=224, key="card_w")
    mean_text = st.text_input("Normalisation mean (RGB)", value=IMAGENET_MEAN, key="card_mean")
    field_error("mean")
    std_text = st.text_input("Normalisation std (RGB)", value=IMAGENET_STD, key="card_std")
    field_error("std")
    architecture = st.text_input("Architecture (state dicts only, e.g. resnet18)", key="card_arch")
    field_error("architecture")
    listed = st.session_state[state.UPLOAD_LAYERS]
    if state.UPLOAD_PENDING_LAYER in st.session_state:  # preselect the detected layer (before the widget exists)
        st.session_state["card_layer"] = st.session_state.pop(state.UPLOAD_PENDING_LAYER)
    layer_options = [None] + (listed or {}).get("layers", [])
    default_layer = (listed or {}).get("target_layer")
    target_layer = st.selectbox(
        "Target layer for CAM methods", layer_options, key="card_layer",
        index=layer_options.index(default_layer) if default_layer in layer_options else 0,
        format_func=lambda v: "detect automatically" if v is None else v)
    field_error("target_layer")
    list_layers = st.button("List the model's layers", key="list_layers", disabled=model_file is None)


def card_from_inputs() -> dict | None:
    """The card: the uploaded one, else the form's fields; None (with field errors set) when incomplete."""
    if card_file is not None:
        try:
            card = json.loads(card_file.getvalue())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            errors["card"] = f"The model card is not valid JSON ({exc}). Fix the file or fill the form instead."
            return None
        if not isinstance(card, dict):
            errors["card"] = "The model card must be a JSON object with task, classes, input_size, mean, std."
            return None
        return card
    if model_file is not None and model_file.name.lower().endswith(".zip"):
        # A Hugging Face folder: the card comes from its config.json (and model.json, if any).
        return {"target_layer": target_layer} if target_layer else {}
    classes = [line.strip() for line in classes_text.splitlines() if line.strip()]
    if not classes:
        errors["classes"] = "List the class names, one per line, in the order of the model's outputs."
    mean, std = floats(mean_text, "mean", 3), floats(std_text, "std", 3)
    if std is not None and any(v <= 0 for v in std):
        errors["std"] = "Standard deviations must be positive."
    if not classes or mean is None or std is None or errors.get("std"):
        return None
    card = {"task": task, "classes": classes, "input_size": [int(height), int(width)], "mean": mean, "std": std}
    if architecture.strip():
        card["architecture"] = architecture.strip()
    if target_layer:
        card["target_layer"] = target_layer
    return card


def inspected(card: dict):
    """Stage the model and its card, and ask a subprocess to load it; error -> shown beside its field."""
    staged = data.stage(model_file.name, model_file.getvalue())
    card_path = staged.parent / "model.json"
    card_path.write_text(json.dumps(card))
    # Loading a model costs seconds: reuse the listing made for the same bytes and card (target layer aside),
    # checking the chosen layer against the layers listed.
    identity = (hashlib.sha256(model_file.getvalue()).hexdigest(),
                json.dumps({k: v for k, v in card.items() if k != "target_layer"}, sort_keys=True))
    cached = st.session_state.get(state.UPLOAD_INSPECTED)
    if cached and cached[0] == identity and card.get("target_layer") in [None, *cached[1]["layers"]]:
        return staged, cached[1]
    result = data.inspect_model(staged, card_path)
    if "error" not in result:
        st.session_state[state.UPLOAD_INSPECTED] = (identity, result)
    if "error" in result:
        message = result["error"].removeprefix("error: ")
        field = next((f for f in ("target_layer", "architecture", "classes", "mean", "std") if f in message), "model")
        errors[field] = message
        return staged, None
    return staged, result


if list_layers and model_file is not None:
    errors.clear()
    card = card_from_inputs()
    if card is not None:
        with st.spinner("Loading the model in a separate process…"):
            _, result = inspected(card)
        st.session_state[state.UPLOAD_LAYERS] = result
        if result is not None:
            st.session_state[state.UPLOAD_PENDING_LAYER] = result.get("target_layer")
    st.rerun()

if st.button("Check and register the model", type="primary", key="register_model", disabled=model_file is None):
    errors.clear()
    card = card_from_inputs()
    if card is not None:
        with st.spinner("Checking the model in a separate process…"):
            staged, result = inspected(card)
        if result is not None:
            try:
                model_id = data.register_model(staged, card)
            except InputError as exc:
                errors["model"] = str(exc)
            else:
                st.success(f"Registered model {model_id} ({result['format']}, {len(result['layers'])} spatial layers).")
    if errors:
        st.rerun()

st.header("Dataset")
dataset_file = st.file_uploader("Dataset (.zip of a folder with manifest.csv, images/, masks/, regions.json; "
                                "of class folders; or, for detectors, COCO: images/, instances.json, optional "
                                "context.json)", type=["zip"], key="upload_dataset",
                                on_change=forget_errors("dataset"))
field_error("dataset")
models = data.models()
model_ids = models["id"].tolist() if "id" in models else []  # an empty workspace's frame has no columns
check_against = st.selectbox("Check the labels against the classes of", [None, *model_ids],
                             format_func=lambda m: "no model" if m is None else m, key="dataset_check_model")
if st.button("Check and register the dataset", type="primary", key="register_dataset", disabled=dataset_file is None):
    errors.pop("dataset", None)
    staged = data.stage(dataset_file.name, dataset_file.getvalue())
    classes = None
    if check_against is not None:
        classes = list(models.set_index("id").loc[check_against, "card"]["classes"])
    try:
        size = data.check_dataset(staged, classes)
        dataset_id = data.register_dataset(staged)
    except InputError as exc:
        errors["dataset"] = str(exc)
        st.rerun()
    else:
        st.success(f"Registered dataset {dataset_id} with {size} images.")
st.caption("Names from your files (classes, regions, file names) are always shown as plain text. Uploads wait "
           "in the workspace's uploads/ folder until they pass the checks.")
