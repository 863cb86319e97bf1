# NBD protocol fuzz targets (nbdsrv/proto.c): handshake + request parsing.
nbdsrv_fuzz_target(nbd_handshake SOURCES fuzz_nbd_handshake.c LIBS nbdsrv_core)
nbdsrv_fuzz_target(nbd_request SOURCES fuzz_nbd_request.c LIBS nbdsrv_core)
