# zdb/ fuzz targets: the RESP reply parser and the pool config parser.
nbdsrv_fuzz_target(zdb_resp SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_zdb_resp.c LIBS zdb)
nbdsrv_fuzz_target(zdb_config SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_zdb_config.c LIBS zdb)
nbdsrv_fuzz_target(zdb_conn SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_zdb_conn.c LIBS zdb)
