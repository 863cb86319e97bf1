# Unit tests of the server's protocol code (owned by the server engineer;
# included from test/nbdsrv/CMakeLists.txt).
nbdsrv_unit_test(check_nbd_proto SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/check_proto.c
                 LIBS nbdsrv_core)
nbdsrv_unit_test(check_nbd_control SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/check_control.c
                 LIBS nbdsrv_core)
