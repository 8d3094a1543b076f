// The JSON replies a dispatch produces, in the one shape cqrsctl prints and clients parse:
//   {"status":"ok","aggregate_id":..,"stream_id":..,"version":..,"command_id":..,"events":[..],
//    "position":"<commit_id>/<global_position>"}   (position: of the last event, when any)
//   {"status":"rejected","error":<code>,"message":..,"command_id":..}
//   {"status":"error","error":<code>,"message":..[,"command_id":..]}
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "cqrs/event.hpp"
#include "cqrs/result.hpp"

namespace cqrs::actors {

std::string error_reply(std::string_view code, std::string_view message,
                        std::string_view command_id = {});
std::string error_reply(const Error& error, std::string_view command_id = {});
// invalid_argument for an admin request whose field has the wrong type (`what`: the JSON
// library's message), which must fail that request, not the actor answering it.
std::string wrong_field_type_reply(std::string_view what);
// Adds "position" to an ok reply (a JSON object's text) without parsing it again.
std::string with_position(std::string reply, const Position& position);
// The "position" of a reply, if it has one.
std::optional<Position> position_of(const nlohmann::json& reply);

std::string rejection_reply(std::string_view code, std::string_view message,
                            std::string_view command_id);

}  // namespace cqrs::actors
