# cqrs_write_if_changed(<file> <content>): writes <content> to <file> unless the file holds
# exactly that already, so regenerating an unchanged source triggers no rebuild. For the
# generators run in script mode (EmbedSchema.cmake, EmbedWeb.cmake).
function(cqrs_write_if_changed file content)
  set(_old "")
  if(EXISTS "${file}")
    file(READ "${file}" _old)
  endif()
  if(NOT _old STREQUAL content)
    file(WRITE "${file}" "${content}")
  endif()
endfunction()
