"""Protobuf messages of etcd's v3 API that the metadata client sends (etcd_wire.proto, generated)."""
