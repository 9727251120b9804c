"""The job's contract: the protobuf messages on its Kafka topics (generated into
`scoring_pb2` from `proto/contract/scoring.proto` by `make protos`), how Python values are
written into them (`values`), and the default topic names (`topics`).

The bottom layer: it imports nothing else of the project.
"""
