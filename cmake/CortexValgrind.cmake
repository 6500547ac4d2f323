# ctest "valgrind.*": run a test program under valgrind memcheck (invalid reads and
# writes, uses of freed memory, definite leaks are errors).
#
#   cmake -DVALGRIND=... -DOBJCOPY=... -DLIB=.../libcortex.so -DWORK=<dir> -P CortexValgrind.cmake <program> [args...]
#
# Valgrind 3.19 cannot read the DWARF 5 debug info of the Swift-built library, so the
# program runs against a copy with the debug sections stripped (LD_LIBRARY_PATH takes
# precedence over the test's RUNPATH).
foreach(var VALGRIND OBJCOPY LIB WORK)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "CortexValgrind.cmake: -D${var}=... is required")
  endif()
endforeach()

# Everything after the script name is the command to run.
set(cmd "")
set(seen_script FALSE)
math(EXPR last "${CMAKE_ARGC} - 1")
foreach(i RANGE ${last})
  if(seen_script)
    list(APPEND cmd "${CMAKE_ARGV${i}}")
  elseif(CMAKE_ARGV${i} MATCHES "CortexValgrind\\.cmake$")
    set(seen_script TRUE)
  endif()
endforeach()
if(NOT cmd)
  message(FATAL_ERROR "CortexValgrind.cmake: no program given")
endif()

file(MAKE_DIRECTORY "${WORK}")
get_filename_component(lib_name "${LIB}" NAME)  # the SONAME, as the programs record it
execute_process(COMMAND "${OBJCOPY}" --strip-debug "${LIB}" "${WORK}/${lib_name}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "objcopy --strip-debug ${LIB} failed")
endif()
set(ENV{LD_LIBRARY_PATH} "${WORK}")
execute_process(
  COMMAND "${VALGRIND}" --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
          --show-leak-kinds=definite "--suppressions=${CMAKE_CURRENT_LIST_DIR}/valgrind.supp" ${cmd}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "valgrind: exit status ${rc} (99: memcheck found errors)")
endif()
