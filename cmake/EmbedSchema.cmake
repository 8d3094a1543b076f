# Generates a C++ source that embeds every schema/NNN_name.sql migration, so the library applies
# its migrations without reading files at run time. Invoked in script mode:
#   cmake -DSCHEMA_DIR=... -DOUTPUT=... -P EmbedSchema.cmake
file(GLOB _files RELATIVE "${SCHEMA_DIR}" "${SCHEMA_DIR}/[0-9][0-9][0-9]_*.sql")
list(SORT _files)
set(_body "")
foreach(_file IN LISTS _files)
  string(REGEX MATCH "^([0-9]+)_(.*)\\.sql$" _ "${_file}")
  math(EXPR _version "${CMAKE_MATCH_1}")
  set(_name "${CMAKE_MATCH_2}")
  file(READ "${SCHEMA_DIR}/${_file}" _sql)
  string(APPEND _body "    {${_version}, \"${_name}\", R\"cqrs_sql(${_sql})cqrs_sql\"},\n")
endforeach()
set(_content "// Generated from schema/*.sql by cmake/EmbedSchema.cmake. Do not edit.
#include \"cqrs/pg/migrate.hpp\"

namespace cqrs::pg {

const std::vector<Migration>& embedded_migrations() {
  static const std::vector<Migration> kMigrations = {
${_body}  };
  return kMigrations;
}

}  // namespace cqrs::pg
")
include("${CMAKE_CURRENT_LIST_DIR}/WriteIfChanged.cmake")
cqrs_write_if_changed("${OUTPUT}" "${_content}")
