# Stage libcortex.so into the build tree, then write cortex.pc to match it.
# Run by the `cortex_swift` target on every build:
#  - with -DPREBUILT=<.so>: copy that library;
#  - otherwise: build it with SwiftPM (scripts/build_lib.sh, which prints its path).
#    SwiftPM is incremental, so an up-to-date build costs a second or so.
# copy_if_different leaves DEST's timestamp alone when nothing changed, so the C tests
# and examples relink only when the library really changed.
#
# cortex.pc: whether OpenBLAS is a link dependency of the library (NEEDED
# libopenblas.so.0: "Requires.private: openblas") or loaded with dlopen at run time
# (nothing to declare) is read from the library itself with readelf.
#
#   cmake -DSOURCE_DIR=<repo> -DSCRATCH=<swiftpm scratch> -DDEST=<.../libcortex.so.ABI>
#         [-DPREBUILT=<.so>] [-DREADELF=<readelf>] -DPC_IN=<cortex.pc.stage> -DPC_OUT=<cortex.pc>
#         -P CortexStageLibrary.cmake
foreach(var SOURCE_DIR DEST PC_IN PC_OUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "CortexStageLibrary.cmake: -D${var}=... is required")
  endif()
endforeach()

if(PREBUILT)
  set(built "${PREBUILT}")
else()
  if(SCRATCH)
    set(ENV{CORTEX_SCRATCH} "${SCRATCH}")
  endif()
  # SwiftPM's progress goes to stderr (shown as is); stdout ends with the library's path.
  execute_process(
    COMMAND "${SOURCE_DIR}/scripts/build_lib.sh"
    WORKING_DIRECTORY "${SOURCE_DIR}"
    OUTPUT_VARIABLE built
    OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "scripts/build_lib.sh failed (exit status ${rc})")
  endif()
  string(REGEX REPLACE ".*\n" "" built "${built}")
endif()
if(NOT EXISTS "${built}")
  message(FATAL_ERROR "libcortex.so not found at '${built}'")
endif()
get_filename_component(dest_dir "${DEST}" DIRECTORY)
file(MAKE_DIRECTORY "${dest_dir}")
execute_process(COMMAND "${CMAKE_COMMAND}" -E copy_if_different "${built}" "${DEST}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cannot copy ${built} to ${DEST}")
endif()
# DEST is named by the SONAME (libcortex.so.<ABI>); libcortex.so is the link-time name.
get_filename_component(dest_name "${DEST}" NAME)
file(CREATE_LINK "${dest_name}" "${dest_dir}/libcortex.so" SYMBOLIC)

set(needs_openblas TRUE) # without readelf, assume the linked build
if(READELF)
  execute_process(COMMAND "${READELF}" -d "${DEST}" OUTPUT_VARIABLE dynamic RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND NOT dynamic MATCHES "NEEDED[^\n]*libopenblas")
    set(needs_openblas FALSE)
  endif()
endif()
if(needs_openblas)
  set(CORTEX_PC_BLAS "# libcortex.so links OpenBLAS dynamically (NEEDED libopenblas.so.0).\nRequires.private: openblas")
else()
  set(CORTEX_PC_BLAS "# OpenBLAS is not a link dependency: libcortex.so loads libopenblas.so.0 with dlopen\n# at first use (Debian: libopenblas0), so it must be installed at run time.")
endif()
configure_file("${PC_IN}" "${PC_OUT}" @ONLY)
