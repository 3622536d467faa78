# install.cmake -- version check, `cmake --install`, the CMake package and the pkg-config file.
# Included once, at the end of the top-level CMakeLists.txt, after the library targets exist.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# ---- One version: project(VERSION) ---------------------------------------------------------------
# include/tapegrad.h carries TG_VERSION_* as literals so that it stays the one self-contained public
# header (no generated header to install beside it). They must agree with project(VERSION): checked
# here, at configure time, so a release that bumps one and forgets the other cannot even build.
set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY
  CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/include/tapegrad.h)
file(STRINGS ${PROJECT_SOURCE_DIR}/include/tapegrad.h tg_version_lines
     REGEX "^#define TG_VERSION_(MAJOR|MINOR|PATCH|STRING) ")
foreach(part MAJOR MINOR PATCH STRING)
  set(tg_header_${part} "")
  foreach(line IN LISTS tg_version_lines)
    if(line MATCHES "^#define TG_VERSION_${part} +\"?([0-9.]+)\"?")
      set(tg_header_${part} ${CMAKE_MATCH_1})
    endif()
  endforeach()
endforeach()
if(NOT tg_header_MAJOR STREQUAL PROJECT_VERSION_MAJOR
   OR NOT tg_header_MINOR STREQUAL PROJECT_VERSION_MINOR
   OR NOT tg_header_PATCH STREQUAL PROJECT_VERSION_PATCH
   OR NOT tg_header_STRING STREQUAL PROJECT_VERSION)
  message(FATAL_ERROR
    "include/tapegrad.h says version ${tg_header_MAJOR}.${tg_header_MINOR}.${tg_header_PATCH} "
    "(TG_VERSION_STRING \"${tg_header_STRING}\") but project(VERSION) is ${PROJECT_VERSION}: "
    "update the TG_VERSION_* macros in the header's Version section")
endif()

# ---- Install -------------------------------------------------------------------------------------
set(TG_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/tapegrad)

# The exported targets are named tapegrad::tapegrad (shared) and tapegrad::tapegrad_static.
# tapegrad_objects is not installed: its objects are inside both libraries. Its PRIVATE
# dependencies reach the export through the two libraries' own PRIVATE links: for the static
# library CMake records them as $<LINK_ONLY:...>, which is why the package config must find them.
# libm is linked by its full path (find_library); exported as is, that path would tie the package
# to this machine's layout. Installed consumers get a plain `m` instead (-lm).
if(TG_LIBM)
  foreach(lib tapegrad tapegrad_static)
    get_target_property(tg_iface ${lib} INTERFACE_LINK_LIBRARIES)
    list(TRANSFORM tg_iface REPLACE "^${TG_LIBM}$" "$<BUILD_INTERFACE:${TG_LIBM}>$<INSTALL_INTERFACE:m>")
    set_target_properties(${lib} PROPERTIES INTERFACE_LINK_LIBRARIES "${tg_iface}")
  endforeach()
endif()
install(TARGETS tapegrad tapegrad_static
  EXPORT tapegradTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT devel
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT devel
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
install(FILES ${PROJECT_SOURCE_DIR}/include/tapegrad.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT devel)

install(EXPORT tapegradTargets
  NAMESPACE tapegrad::
  DESTINATION ${TG_CMAKE_INSTALL_DIR}
  COMPONENT devel)

# The config file re-finds the dependencies under the same target names the build used
# (ZLIB::ZLIB, PkgConfig::XXHASH, and cjson or PkgConfig::CJSON).
configure_package_config_file(
  ${CMAKE_CURRENT_LIST_DIR}/tapegradConfig.cmake.in
  ${PROJECT_BINARY_DIR}/tapegradConfig.cmake
  INSTALL_DESTINATION ${TG_CMAKE_INSTALL_DIR})
# Before 1.0 a minor release may break the API, so only the same MAJOR.MINOR is compatible.
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/tapegradConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/tapegradConfig.cmake
  ${PROJECT_BINARY_DIR}/tapegradConfigVersion.cmake
  DESTINATION ${TG_CMAKE_INSTALL_DIR}
  COMPONENT devel)

# ---- pkg-config ----------------------------------------------------------------------------------
# Relocatable: prefix is found from the .pc file's own directory, so `cmake --install --prefix X`
# (which ignores the configure-time CMAKE_INSTALL_PREFIX) still yields a correct file.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}" OR IS_ABSOLUTE "${CMAKE_INSTALL_INCLUDEDIR}")
  set(TG_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
  set(TG_PC_LIBDIR "${CMAKE_INSTALL_FULL_LIBDIR}")
  set(TG_PC_INCLUDEDIR "${CMAKE_INSTALL_FULL_INCLUDEDIR}")
else()
  file(RELATIVE_PATH tg_pc_up /_prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /_prefix)
  string(REGEX REPLACE "/$" "" tg_pc_up "${tg_pc_up}")
  set(TG_PC_PREFIX "\${pcfiledir}/${tg_pc_up}")
  set(TG_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
  set(TG_PC_INCLUDEDIR "\${prefix}/${CMAKE_INSTALL_INCLUDEDIR}")
endif()
set(TG_PC_LIBS_PRIVATE "-pthread") # the kernels' worker pool
set(TG_PC_REQUIRES_PRIVATE "")      # the I/O part's libraries, when it is built in
if(TG_WITH_IO)
  set(TG_PC_REQUIRES_PRIVATE "zlib libxxhash libcjson")
endif()
if(TG_LIBM)
  string(APPEND TG_PC_LIBS_PRIVATE " -lm")
endif()
if(TG_USE_OPENBLAS)
  string(APPEND TG_PC_LIBS_PRIVATE " -lopenblas")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/tapegrad.pc.in ${PROJECT_BINARY_DIR}/tapegrad.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/tapegrad.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
  COMPONENT devel)

# ---- The MPI part (dist/), when it was built ------------------------------------------------------
# tapegrad::tapegrad_mpi in its own export file, which tapegradConfig.cmake includes when present
# (find_package(tapegrad COMPONENTS mpi) requires it); pkg-config module tapegrad_mpi.
if(TARGET tapegrad_mpi)
  install(TARGETS tapegrad_mpi
    EXPORT tapegrad_mpiTargets
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime NAMELINK_COMPONENT devel
    RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime)
  install(FILES ${PROJECT_SOURCE_DIR}/dist/tapegrad_mpi.h
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT devel)
  install(EXPORT tapegrad_mpiTargets
    NAMESPACE tapegrad::
    DESTINATION ${TG_CMAKE_INSTALL_DIR}
    COMPONENT devel)
  # The MPI implementation's own module for `pkg-config --static` (Debian: mpi-c, ompi-c).
  set(TG_PC_MPI "")
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    foreach(mod mpi-c ompi-c)
      pkg_check_modules(TG_MPI_PC QUIET ${mod})
      if(TG_MPI_PC_FOUND)
        set(TG_PC_MPI " ${mod}")
        break()
      endif()
    endforeach()
  endif()
  configure_file(${CMAKE_CURRENT_LIST_DIR}/tapegrad_mpi.pc.in ${PROJECT_BINARY_DIR}/tapegrad_mpi.pc
    @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/tapegrad_mpi.pc
    DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig
    COMPONENT devel)
endif()
