# Generates a C++ source that embeds the files of web/ (the demo page: HTML, CSS, JavaScript), so
# cqrsd serves them without reading files at run time. Invoked in script mode:
#   cmake -DWEB_DIR=... -DOUTPUT=... -P EmbedWeb.cmake
file(GLOB _files RELATIVE "${WEB_DIR}" "${WEB_DIR}/*")
if(NOT _files)
  message(FATAL_ERROR "no files in ${WEB_DIR}: the web page would be missing")
endif()
list(SORT _files)
set(_body "")
foreach(_file IN LISTS _files)
  if(IS_DIRECTORY "${WEB_DIR}/${_file}")
    continue()
  endif()
  string(REGEX MATCH "\\.[a-z]+$" _ext "${_file}")
  if(_ext STREQUAL ".html")
    set(_type "text/html; charset=utf-8")
  elseif(_ext STREQUAL ".css")
    set(_type "text/css; charset=utf-8")
  elseif(_ext STREQUAL ".js")
    set(_type "text/javascript; charset=utf-8")
  elseif(_ext STREQUAL ".svg")
    set(_type "image/svg+xml")
  else()
    message(FATAL_ERROR "web/${_file}: no content type known for '${_ext}' (cmake/EmbedWeb.cmake)")
  endif()
  file(READ "${WEB_DIR}/${_file}" _text)
  string(FIND "${_text}" ")cqrs_web\"" _clash)
  if(NOT _clash EQUAL -1)
    message(FATAL_ERROR "web/${_file} contains the raw string delimiter )cqrs_web\"")
  endif()
  string(APPEND _body "    {\"/${_file}\", \"${_type}\", R\"cqrs_web(${_text})cqrs_web\"},\n")
endforeach()
set(_content "// Generated from web/* by cmake/EmbedWeb.cmake. Do not edit.
#include \"actors/web_assets.hpp\"

namespace cqrs::actors {

const std::vector<WebAsset>& web_assets() {
  static const std::vector<WebAsset> kAssets = {
${_body}  };
  return kAssets;
}

}  // namespace cqrs::actors
")
include("${CMAKE_CURRENT_LIST_DIR}/WriteIfChanged.cmake")
cqrs_write_if_changed("${OUTPUT}" "${_content}")
