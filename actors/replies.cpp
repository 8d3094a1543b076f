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

std::string wrong_field_type_reply(std::string_view what) {
  return error_reply(errc::kInvalidArgument,
                     "admin request has a field of the wrong type: " + std::string(what));
}

std::string with_position(std::string reply, const Position& position) {
  if (reply.empty() || reply.back() != '}') return reply;
  reply.pop_back();
  reply += ",\"position\":\"" + position.to_string() + "\"}";
  return reply;
}

std::optional<Position> position_of(const nlohmann::json& reply) {
  auto it = reply.find("position");
  if (it == reply.end() || !it->is_string()) return std::nullopt;
  return Position::parse(it->get_ref<const std::string&>());
}

std::string rejection_reply(std::string_view code, std::string_view message,
                            std::string_view command_id) {
  return nlohmann::json{
      {"status", "rejected"}, {"error", code}, {"message", message}, {"command_id", command_id}}
      .dump();
}

}  // namespace cqrs::actors
