# `cmake --install` gives a package that C++ users consume with find_package(cppmega).
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
install(TARGETS cppmega EXPORT cppmegaTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(DIRECTORY include/cppmega DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(CPPMEGA_BUILD_CLI)
  install(TARGETS cppmega_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
install(EXPORT cppmegaTargets NAMESPACE cppmega:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cppmega)
configure_package_config_file(cmake/cppmega-config.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/cppmega-config.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cppmega)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/cppmega-config-version.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/cppmega-config.cmake ${CMAKE_CURRENT_BINARY_DIR}/cppmega-config-version.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/cppmega)
