"""The model types the contract knows: the name each goes by on the command line, and the
file its artifact is stored as. A new type is a `ModelType` value in the proto, a line in
each table here, and a backend (`scoring/backends/`)."""

from contract import scoring_pb2 as pb

BY_NAME = {"pmml": pb.PMML, "tensorflow": pb.TENSORFLOW_SAVED_MODEL, "onnx": pb.ONNX}
ARTIFACT_FILES = {pb.PMML: "model.pmml", pb.TENSORFLOW_SAVED_MODEL: "model.tar.gz", pb.ONNX: "model.onnx"}
