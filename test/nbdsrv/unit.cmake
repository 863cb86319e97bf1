# Unit tests of the server's protocol code (owned by the server engineer;
# included from test/nbdsrv/CMakeLists.txt).
nbdsrv_unit_test(check_nbd_proto SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/check_proto.c
                 LIBS nbdsrv_core)
