# What `cmake --install` puts under the prefix, and the CMake package `cqrs` that lets another
# project write find_package(cqrs) and link cqrs::cqrs (docs/operations.md shows the layout):
#   bin/                      cqrsd, cqrsctl, cqrs-migrate
#   include/cqrs/             the core library's headers ("cqrs/...")
#   include/cqrsd/actors/     the actor runtime's headers ("actors/...")
#   lib/                      libcqrs.a (cqrs::core), libcqrs_actors.a (cqrs::actors)
#   lib/cmake/cqrs/           cqrsConfig.cmake, its version file, the exported targets and
#                             FindCAF.cmake (Debian's libcaf-dev ships no CMake package)
#   share/cqrs/schema/        the SQL migrations (also compiled into the library)
#   share/cqrs/config/        cqrsd.conf and the systemd unit cqrsd.service
#   share/doc/cqrsd/          docs/*.md
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(CQRS_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/cqrs"
    CACHE STRING "where the CMake package files go, relative to the prefix")
set(_cqrs_datadir "${CMAKE_INSTALL_DATADIR}/cqrs")

# cqrs::cqrs is everything a daemon of one's own links: the core and the actor runtime, with
# CAF, libpq, nlohmann_json and spdlog behind them.
add_library(cqrs_package INTERFACE)
set_target_properties(cqrs_package PROPERTIES EXPORT_NAME cqrs)
target_link_libraries(cqrs_package INTERFACE cqrs cqrs_actors)
add_library(cqrs::cqrs ALIAS cqrs_package)

install(TARGETS cqrsd cqrsctl cqrs-migrate RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
install(TARGETS cqrs cqrs_actors cqrs_package
  EXPORT cqrsTargets
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/src/cqrs/"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/cqrs"
  FILES_MATCHING PATTERN "*.hpp")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/actors/"
  DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/cqrsd/actors"
  FILES_MATCHING PATTERN "*.hpp")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/schema/"
  DESTINATION "${_cqrs_datadir}/schema"
  FILES_MATCHING PATTERN "*.sql")
install(FILES "${PROJECT_SOURCE_DIR}/config/cqrsd.conf" "${PROJECT_SOURCE_DIR}/config/cqrsd.service"
  DESTINATION "${_cqrs_datadir}/config")
install(DIRECTORY "${PROJECT_SOURCE_DIR}/docs/"
  DESTINATION "${CMAKE_INSTALL_DOCDIR}"
  FILES_MATCHING PATTERN "*.md")

install(EXPORT cqrsTargets NAMESPACE cqrs:: DESTINATION "${CQRS_INSTALL_CMAKEDIR}")
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/cqrsConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/cqrsConfig.cmake"
  INSTALL_DESTINATION "${CQRS_INSTALL_CMAKEDIR}")
# 0.x: a minor version may change the API.
write_basic_package_version_file("${PROJECT_BINARY_DIR}/cqrsConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMinorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/cqrsConfig.cmake"
  "${PROJECT_BINARY_DIR}/cqrsConfigVersion.cmake"
  "${PROJECT_SOURCE_DIR}/cmake/FindCAF.cmake"
  DESTINATION "${CQRS_INSTALL_CMAKEDIR}")
