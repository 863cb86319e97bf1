# Unit tests of the server's protocol code (owned by the server engineer;
# included from test/nbdsrv/CMakeLists.txt).
nbdsrv_unit_test(check_nbd_proto SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/check_proto.c
                 LIBS nbdsrv_core)
nbdsrv_unit_test(check_nbd_control SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/check_control.c
                 LIBS nbdsrv_core)
# Extended headers end to end against the real binary (no installed client
# speaks them yet).
nbdsrv_unit_test(check_nbd_ext_headers
                 SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/check_ext_headers.c LIBS common)
target_compile_definitions(check_nbd_ext_headers PRIVATE
                           NBDSRV_BIN="$<TARGET_FILE:nbdsrv>")
add_dependencies(check_nbd_ext_headers nbdsrv)
# Reactor lifecycle (handover to a reactor that exited) through a test hook.
nbdsrv_unit_test(check_nbd_server SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/check_server.c
                 LIBS nbdsrv_core)
