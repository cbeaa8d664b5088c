"""Kafka dispatch: the engine's ``kafka_outbox`` mode (needs the ``kafka`` extra).

``dispatch`` decodes and encodes the engine's records; ``consumer`` holds
the consuming pieces (offset tracking, deduplication, ``KafkaJobSource``).
"""
