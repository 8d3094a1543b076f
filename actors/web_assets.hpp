// The files of web/, compiled into cqrsd (cmake/EmbedWeb.cmake generates the definition).
#pragma once

#include <string_view>
#include <vector>

namespace cqrs::actors {

struct WebAsset {
  std::string_view path;  // "/index.html", "/app.js", ...
  std::string_view content_type;
  std::string_view body;
};

const std::vector<WebAsset>& web_assets();

}  // namespace cqrs::actors
