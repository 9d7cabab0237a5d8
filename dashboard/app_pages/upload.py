"""Upload: a model file with its card, and a dataset zip, each checked before anything is stored.

The model is inspected by a subprocess (`analysis.inspect_model`): this process never loads it.
Problems are shown under the field they concern, in the engine's own words.
"""
import hashlib
import json

import streamlit as st

from dashboard import data, state, views
from explainers.loading.card import card_warnings
from explainers.errors import InputError
from explainers.loading.model_tasks import TASK_NAMES

TASKS = list(TASK_NAMES)
CARD_EXTRA, CARD_WARNINGS = "upload_card_extra", "upload_card_warnings"
REGISTERED, DATASET_RESULT = "upload_registered", "upload_dataset_result"
CONFIRM_DELETE, MANAGE_MESSAGE = "manage_confirm_delete", "manage_message"  # keys of an uploaded card the form has no field for (kept as they are)
IMAGENET_MEAN, IMAGENET_STD = "0.485, 0.456, 0.406", "0.229, 0.224, 0.225"

st.title("Upload")
data.warm_model_check()  # the checker imports torch now, while the files are being chosen
st.caption(f"Files up to {st.get_option('server.maxUploadSize')} MB each (`server.maxUploadSize` in "
           "dashboard/.streamlit/config.toml). A larger dataset need not pass through the browser: "
           "`saliency-audit run --data FOLDER` registers it from disk.")
errors: dict = st.session_state[state.UPLOAD_ERRORS]


def forget_errors(*fields: str):
    """An `on_change` callback: a new file clears the errors (and the success) about the old one."""
    return lambda: [st.session_state[state.UPLOAD_ERRORS].pop(f, None) for f in fields] + [
        st.session_state.pop(REGISTERED if "model" in fields else DATASET_RESULT, None)]


def clear_errors() -> None:
    """Before a new check: forget the last one's problems, except a broken uploaded card (still broken)."""
    card = errors.get("card")
    errors.clear()
    if card:
        errors["card"] = card


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


def fill_form_from_card() -> None:
    """`on_change` of the card uploader: the uploaded card's values go into the form, which stays the one
    place the card is read from (what you see is what is registered)."""
    for field in [f for f in st.session_state[state.UPLOAD_ERRORS] if f != "dataset"]:
        st.session_state[state.UPLOAD_ERRORS].pop(field)  # a new card: the last check's problems are moot
    uploaded = st.session_state.get("upload_card")
    st.session_state[CARD_EXTRA] = {}
    st.session_state[CARD_WARNINGS] = []
    if uploaded is None:
        return
    try:
        card = json.loads(uploaded.getvalue())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        st.session_state[state.UPLOAD_ERRORS]["card"] = (f"{uploaded.name} is not valid JSON ({exc}). Fix the file "
                                                         "or fill the form instead.")
        return
    if not isinstance(card, dict):
        st.session_state[state.UPLOAD_ERRORS]["card"] = (f"{uploaded.name} must be a JSON object with task, "
                                                         "classes, input_size, mean, std.")
        return
    st.session_state[CARD_WARNINGS] = card_warnings(card, uploaded.name)  # the CLI's words for the same card
    known = {"task": "card_task", "architecture": "card_arch", "name": "model_name", "version": "model_version"}
    for key, widget in known.items():
        if card.get(key) is not None and (key != "task" or card[key] in TASKS):
            st.session_state[widget] = str(card[key])
    if isinstance(card.get("classes"), list):
        st.session_state["card_classes"] = "\n".join(str(c) for c in card["classes"])
    size = card.get("input_size")
    if isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size):
        st.session_state["card_h"], st.session_state["card_w"] = size
    for key in ("mean", "std"):
        if isinstance(card.get(key), list):
            st.session_state[f"card_{key}"] = ", ".join(str(v) for v in card[key])
    if card.get("target_layer"):
        st.session_state[state.UPLOAD_LAYERS] = {"layers": [card["target_layer"]], "target_layer": card["target_layer"]}
        st.session_state[state.UPLOAD_PENDING_LAYER] = card["target_layer"]
    st.session_state[CARD_EXTRA] = {k: v for k, v in card.items() if k not in {
        "task", "classes", "input_size", "mean", "std", "architecture", "target_layer", "name", "version"}}


for key, value in (("card_h", 224), ("card_w", 224), ("card_mean", IMAGENET_MEAN), ("card_std", IMAGENET_STD)):
    st.session_state.setdefault(key, value)  # defaults here, not in the widgets: an uploaded card may set them

st.header("Model")
model_file = st.file_uploader("Model file (.pt2 recommended; .pt/.pth/.safetensors state dict; .ts TorchScript; "
                              ".onnx, or a .zip of a Hugging Face save_pretrained folder: its card comes from "
                              "config.json)", type=["pt2", "pt", "pth", "safetensors", "ts", "onnx", "zip"],
                              key="upload_model",
                              on_change=forget_errors("model", "card", "target_layer", "architecture", "classes",
                                                      "mean", "std"))
if model_file is not None and model_file.name.lower().endswith(".onnx"):
    st.info("ONNX runs no Python: onnxruntime executes only the graph's standard operators, so this file cannot "
            "run code when it is checked or audited. It is a black box: occlusion and rise (drise for detectors) "
            "explain it; gradient and CAM methods need a .pt2 export.")
card_file = st.file_uploader("Model card (model.json), optional: it fills the form below",
                             type=["json"], key="upload_card", on_change=fill_form_from_card)
with st.container():  # one fixed slot: the form below keeps its place when the card's messages come and go
    field_error("card")
    for line in (st.session_state.get(CARD_WARNINGS) or []) if card_file is not None else []:
        st.warning(views.plain(line))
n1, n2 = st.columns([3, 1])
default_name = views.default_model_name(model_file.name if model_file is not None else None)
model_name = n1.text_input("Name", key="model_name", placeholder=default_name or "the model's name",
                           help="Shown on every page, export and listing. Empty: " + (default_name or "the file's name"))
model_version = n2.text_input("Version (optional)", key="model_version", placeholder="e.g. v2")

with st.container(border=True):
    st.markdown("**Model card**")
    task = st.selectbox("Task", TASKS, key="card_task")
    classes_text = st.text_area("Classes, one per line, in the model's output order", key="card_classes")
    c1, c2 = st.columns(2)
    height = c1.number_input("Input height", min_value=8, max_value=4096, key="card_h")
    width = c2.number_input("Input width", min_value=8, max_value=4096, key="card_w")
    mean_text = st.text_input("Normalisation mean (RGB)", key="card_mean")
    std_text = st.text_input("Normalisation std (RGB)", key="card_std")
    architecture = st.text_input("Architecture (state dicts only, e.g. resnet18)", key="card_arch")
    listed = st.session_state[state.UPLOAD_LAYERS]
    if state.UPLOAD_PENDING_LAYER in st.session_state:  # preselect the detected layer (before the widget exists)
        st.session_state["card_layer"] = st.session_state.pop(state.UPLOAD_PENDING_LAYER)
    layer_options = [None] + (listed or {}).get("layers", [])
    default_layer = (listed or {}).get("target_layer")
    target_layer = st.selectbox(
        "Target layer for CAM methods", layer_options, key="card_layer",
        index=layer_options.index(default_layer) if default_layer in layer_options else 0,
        format_func=lambda v: "detect automatically" if v is None else v)
    list_layers = st.button("List the model's layers", key="list_layers", disabled=model_file is None)


def card_from_inputs() -> dict | None:
    """The card from the form's fields (an uploaded card has filled them); None (with field errors) when incomplete."""
    if errors.get("card"):
        return None
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
    card = {**st.session_state.get(CARD_EXTRA, {}), "task": task, "classes": classes,
            "input_size": [int(height), int(width)], "mean": mean, "std": std}
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
    clear_errors()
    card = card_from_inputs()
    if card is not None:
        with st.spinner("Loading the model in a separate process…"):
            staged, result = inspected(card)
        data.unstage(staged)
        st.session_state[state.UPLOAD_LAYERS] = result
        if result is not None:
            st.session_state[state.UPLOAD_PENDING_LAYER] = result.get("target_layer")
    st.rerun()

def errors_here() -> None:
    """Every problem of the last check, beside the button that started it: the fields above say it too."""
    for field, message in errors.items():
        if message and field not in ("dataset", "card"):  # those two show under their own uploader
            st.error(views.plain(message))


if st.button("Check and register the model", type="primary", key="register_model", disabled=model_file is None):
    clear_errors()
    card = card_from_inputs()
    if card is not None:
        with st.spinner("Checking the model in a separate process…"):
            staged, result = inspected(card)
        try:
            if result is not None:
                name = model_name.strip() or default_name or staged.stem
                model_id = data.register_model(staged, card, name, model_version.strip() or None)
        except InputError as exc:
            errors["model"] = str(exc)
        else:
            if result is not None:
                st.session_state[state.UPLOADED_MODELS] = [m for m in st.session_state[state.UPLOADED_MODELS]
                                                           if m != model_id] + [model_id]  # New audit starts on it
                st.session_state[REGISTERED] = (f"Registered model {data.model_name(model_id)} ({result['format']}, "
                                                f"{len(result['layers'])} spatial layers).")
        finally:
            data.unstage(staged)
    elif not errors:
        errors["model"] = "The model card is incomplete: fill the fields above."
    st.rerun()
errors_here()
registered = st.session_state.pop(REGISTERED, None)  # said once, right after the click: not beside later prompts
if registered and not any(v for k, v in errors.items() if k != "dataset"):
    st.success(views.plain(registered))

st.header("Dataset")
dataset_file = st.file_uploader("Dataset (.zip of a folder with manifest.csv, images/, masks/, regions.json; "
                                "of class folders; or, for detectors, COCO: images/, instances.json, optional "
                                "context.json)", type=["zip"], key="upload_dataset",
                                on_change=forget_errors("dataset"))
default_dataset = views.default_model_name(dataset_file.name if dataset_file is not None else None)
dataset_label = st.text_input("Dataset name", key="dataset_name", placeholder=default_dataset or "the dataset's name")
models = data.models()
model_ids = models["id"].tolist() if "id" in models else []  # an empty workspace's frame has no columns
model_labels = dict(zip(model_ids, models["label"])) if model_ids else {}
check_against = st.selectbox("Check the labels against the classes of", [None, *model_ids],
                             format_func=lambda m: "no model" if m is None else model_labels[m],
                             key="dataset_check_model")
if st.button("Check and register the dataset", type="primary", key="register_dataset", disabled=dataset_file is None):
    errors.pop("dataset", None)
    st.session_state.pop(DATASET_RESULT, None)
    staged = data.stage(dataset_file.name, dataset_file.getvalue())
    classes = None
    if check_against is not None:
        classes = list(models.set_index("id").loc[check_against, "card"]["classes"])
    try:
        with st.spinner("Reading every image…"):
            size, unreadable = data.check_dataset(staged, classes)
            dataset_id = data.register_dataset(staged, dataset_label.strip() or default_dataset)
    except InputError as exc:
        errors["dataset"] = str(exc)
    else:
        st.session_state[state.UPLOADED_DATASETS] = [d for d in st.session_state[state.UPLOADED_DATASETS]
                                                     if d != dataset_id] + [dataset_id]
        st.session_state[DATASET_RESULT] = (data.dataset_name(dataset_id), size, unreadable)
    finally:
        data.unstage(staged)
field_error("dataset")
dataset_result = st.session_state.pop(DATASET_RESULT, None)  # said once, as the model's
if dataset_result and not errors.get("dataset"):
    name, size, unreadable = dataset_result
    st.success(views.plain(f"Registered dataset {name} with {size} images"
                           f"{f', of which {size - len(unreadable)} can be audited' if unreadable else ''}."))
    if unreadable:
        st.warning(views.plain(f"{len(unreadable)} image(s) cannot be read and will be skipped by every audit: " +
                               "; ".join(f"{u['image']} ({u['reason']})" for u in unreadable[:20]) +
                               (f"; and {len(unreadable) - 20} more" if len(unreadable) > 20 else "")))
st.caption("Names from your files (classes, regions, file names) are always shown as plain text. Uploads wait "
           "in the workspace's uploads/ folder until they pass the checks.")

st.header("Rename or delete")
kinds = {"model": data.models(), "dataset": data.datasets(), "run": data.runs()}
kind = st.radio("What", list(kinds), horizontal=True, key="manage_kind",
                format_func={"model": "a model", "dataset": "a dataset", "run": "an audit"}.get)
table = kinds[kind]
if table.empty:
    st.caption(f"No {kind} registered yet.")
else:
    names = ({r: data.run_label(r) for r in table["id"]} if kind == "run" else
             dict(zip(table["id"], table["label"] if kind == "model" else table["name"])))
    item = st.selectbox("Which", list(names), format_func=names.get, key=f"manage_{kind}")
    m1, m2 = st.columns([3, 1])
    current = table.set_index("id").loc[item]
    new_name = m1.text_input("New name", value=str(current["name"] or ""), key=f"manage_name_{kind}_{item}")
    new_version = (m2.text_input("Version", value=str(current.get("version") or ""), key=f"manage_version_{item}")
                   if kind == "model" else None)
    b1, b2, _ = st.columns([1, 1, 3])
    if b1.button("Rename", key="manage_rename"):
        try:
            data.rename(kind, item, new_name, new_version)
        except InputError as exc:
            st.session_state[MANAGE_MESSAGE] = ("error", str(exc))
        else:
            st.session_state[MANAGE_MESSAGE] = ("success", f"Renamed to {new_name.strip()}.")
        st.rerun()
    if b2.button("Delete…", key="manage_delete"):
        st.session_state[CONFIRM_DELETE] = (kind, item)
    if st.session_state.get(CONFIRM_DELETE) == (kind, item):
        audits = [r for r in data.runs_of(kind, item) if r != item]
        with st.container(border=True):
            st.warning(views.plain(f"Delete {names[item]}" + (f" and its {len(audits)} audit(s)" if audits else "") +
                                   "? Its files and results are removed; this cannot be undone."))
            c1, c2, _ = st.columns([1, 1, 3])
            if c1.button("Yes, delete", type="primary", key="manage_confirm"):
                st.session_state.pop(CONFIRM_DELETE)
                try:
                    data.delete(kind, item)
                except InputError as exc:
                    st.session_state[MANAGE_MESSAGE] = ("error", str(exc))
                else:
                    st.session_state[MANAGE_MESSAGE] = ("success", f"Deleted {names[item]}.")
                st.rerun()
            if c2.button("Keep it", key="manage_keep"):
                st.session_state.pop(CONFIRM_DELETE)
                st.rerun()
message = st.session_state.pop(MANAGE_MESSAGE, None)
if message:
    (st.error if message[0] == "error" else st.success)(views.plain(message[1]))
