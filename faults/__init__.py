"""Fault injection and bad input against the running scoring job (`make faults`).

Everything is real: a Kafka broker on a free port, the model store over HTTP (with
faults to inject), the Flink standalone cluster and the job submitted with `flink run`.
Each case streams or sends records with ids of its own, disrupts something, reads every
output topic back with `read_committed`, and reports sent / scored / dead-lettered /
lost / duplicated (`faults.report`).
"""
