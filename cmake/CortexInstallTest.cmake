# ctest "install.consumer": install the build tree into a scratch prefix, move that
# prefix (the package files must be relocatable), then build and run a consumer
# project with find_package(cortex) and a C program with pkg-config.
#
#   cmake -DBUILD_DIR=... -DCONSUMER_DIR=... -DWORK_DIR=... -DMODEL_DIR=... -DC_COMPILER=... -P CortexInstallTest.cmake
foreach(var BUILD_DIR CONSUMER_DIR WORK_DIR MODEL_DIR C_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "CortexInstallTest.cmake: -D${var}=... is required")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "FAILED (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(staged "${WORK_DIR}/staged")
set(prefix "${WORK_DIR}/prefix")

run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${staged}")
# Move the install tree: nothing may remember the prefix it was installed to.
file(RENAME "${staged}" "${prefix}")
file(GLOB_RECURSE installed RELATIVE "${prefix}" "${prefix}/*")
list(SORT installed)
string(REPLACE ";" "\n  " listing "${installed}")
message(STATUS "installed (then moved to ${prefix}):\n  ${listing}")
foreach(f include/cortex.h include/cortex_dlpack.h include/cortex.hpp)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "${f} was not installed")
  endif()
endforeach()
file(GLOB_RECURSE libs "${prefix}/*/libcortex.so")
file(GLOB_RECURSE pcs "${prefix}/*/pkgconfig/cortex.pc")
file(GLOB_RECURSE configs "${prefix}/*/cmake/cortex/cortexConfig.cmake")
file(GLOB_RECURSE versions "${prefix}/*/cmake/cortex/cortexConfigVersion.cmake")
foreach(v libs pcs configs versions)
  list(LENGTH ${v} n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "expected exactly one installed file for '${v}', found: ${${v}}")
  endif()
endforeach()

# 1. CMake consumer: find_package(cortex 0.1 REQUIRED) + cortex::cortex.
set(cbuild "${WORK_DIR}/consumer-build")
run("${CMAKE_COMMAND}" -S "${CONSUMER_DIR}" -B "${cbuild}" "-DCMAKE_PREFIX_PATH=${prefix}"
    -DCMAKE_BUILD_TYPE=Release "-DCMAKE_C_COMPILER=${C_COMPILER}")
run("${CMAKE_COMMAND}" --build "${cbuild}")
foreach(exe consumer_c consumer_cpp)
  run("${cbuild}/${exe}" "${MODEL_DIR}")
  message(STATUS "${exe}: ${run_output}")
endforeach()

# The executable must not remember the build tree's absolute library path.
find_program(READELF readelf)
if(READELF)
  run("${READELF}" -d "${cbuild}/consumer_c")
  if(NOT run_output MATCHES "NEEDED[^\n]*\\[libcortex\\.so\\.[0-9]+\\]")
    message(FATAL_ERROR "consumer_c does not record NEEDED libcortex.so.<ABI> (the SONAME):\n${run_output}")
  endif()
endif()

# A version the package does not satisfy must be refused.
file(WRITE "${WORK_DIR}/badversion/CMakeLists.txt"
  "cmake_minimum_required(VERSION 3.20)\nproject(v C)\nfind_package(cortex 0.2 REQUIRED)\n")
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${WORK_DIR}/badversion" -B "${WORK_DIR}/badversion/build"
                        "-DCMAKE_PREFIX_PATH=${prefix}"
                RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
if(rc EQUAL 0)
  message(FATAL_ERROR "find_package(cortex 0.2) accepted version 0.1.x")
endif()

# 2. pkg-config consumer.
find_program(PKG_CONFIG pkg-config)
if(PKG_CONFIG)
  get_filename_component(pcdir "${pcs}" DIRECTORY)
  set(ENV{PKG_CONFIG_PATH} "${pcdir}")
  run("${PKG_CONFIG}" --modversion cortex)
  string(STRIP "${run_output}" pcversion)
  run("${PKG_CONFIG}" --cflags --libs cortex)
  string(STRIP "${run_output}" flags)
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run("${PKG_CONFIG}" --variable=libdir cortex)
  string(STRIP "${run_output}" libdir)
  message(STATUS "pkg-config cortex ${pcversion}: ${flags}")
  run("${C_COMPILER}" -std=c99 -Wall -Wextra -Werror -pedantic "${CONSUMER_DIR}/main.c" ${flags}
      "-Wl,-rpath,${libdir}" -o "${WORK_DIR}/consumer_pkgconfig")
  run("${WORK_DIR}/consumer_pkgconfig" "${MODEL_DIR}")
  message(STATUS "consumer_pkgconfig: ${run_output}")
else()
  message(STATUS "pkg-config not found: skipping the pkg-config consumer")
endif()
