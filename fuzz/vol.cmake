# vol/ fuzz target: arbitrary operation programs on a memstore pool; the
# metadata invariants (vol_check) and leak/double-drop freedom must hold.
nbdsrv_fuzz_target(vol_ops SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_vol_ops.c LIBS vol)
