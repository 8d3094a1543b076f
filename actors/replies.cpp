// Reply JSON builders.
#include "actors/replies.hpp"

namespace cqrs::actors {

std::string error_reply(std::string_view code, std::string_view message,
                        std::string_view command_id) {
  nlohmann::json reply = {{"status", "error"}, {"error", code}, {"message", message}};
  if (!command_id.empty()) reply["command_id"] = command_id;
  return reply.dump();
}

std::string error_reply(const Error& error, std::string_view command_id) {
  if (error.kind() == ErrorKind::kRejected) {
    return rejection_reply(error.code(), error.message(), command_id);
  }
  return error_reply(error.code(), error.message(), command_id);
}

std::string rejection_reply(std::string_view code, std::string_view message,
                            std::string_view command_id) {
  return nlohmann::json{
      {"status", "rejected"}, {"error", code}, {"message", message}, {"command_id", command_id}}
      .dump();
}

}  // namespace cqrs::actors
