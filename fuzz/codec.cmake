# FLECC codec fuzz target (codec/): shard parsing, verification, decoding,
# rebuild and the metadata record, plus an encode→damage→decode oracle.
nbdsrv_fuzz_target(codec_shard SOURCES fuzz_codec_shard.c LIBS codec common)
