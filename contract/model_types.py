"""The model types the contract knows: the name each goes by on the command line, and the
file its artifact is stored as. A new type is a `ModelType` value in the proto, a line in
each table here, and a backend (`scoring/backends/`)."""

from contract import scoring_pb2 as pb

BY_NAME = {"pmml": pb.PMML, "tensorflow": pb.TENSORFLOW_SAVED_MODEL, "onnx": pb.ONNX,
           "xgboost": pb.XGBOOST, "lightgbm": pb.LIGHTGBM}
ARTIFACT_FILES = {pb.PMML: "model.pmml", pb.TENSORFLOW_SAVED_MODEL: "model.tar.gz", pb.ONNX: "model.onnx",
                  pb.XGBOOST: "model.json", pb.LIGHTGBM: "model.txt"}
XGBOOST_UBJSON_FILE = "model.ubj"

# What may follow the opening "{" of XGBoost's UBJSON: a key's length type, or a typed container's marker.
_UBJSON_MARKERS = b"iUIlL$#}"


def xgboost_encoding(head: bytes) -> str | None:
    """"json" or "ubj" for the two formats XGBoost saves a model in, told by its first bytes (both
    start with "{"); None for anything else."""
    text = head.lstrip(b" \t\r\n")
    if text[:1] != b"{":
        return None
    after = text[1:].lstrip(b" \t\r\n")[:1]
    if after in (b'"', b"}"):
        return "json"
    return "ubj" if text[1:2] and text[1:2] in _UBJSON_MARKERS else None


def artifact_file(model_type: int, head: bytes = b"") -> str:
    """The file name the store keeps an artifact as, given its first bytes. XGBoost picks its parser
    by the file's suffix, so a model in UBJSON is kept as model.ubj, one in JSON as model.json (the
    backend itself reads the content, never the name)."""
    if model_type == pb.XGBOOST and xgboost_encoding(head) == "ubj":
        return XGBOOST_UBJSON_FILE
    return ARTIFACT_FILES[model_type]
