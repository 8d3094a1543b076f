// The JSON replies a dispatch produces, in the one shape cqrsctl prints and clients parse:
//   {"status":"ok","aggregate_id":..,"stream_id":..,"version":..,"command_id":..,"events":[..]}
//   {"status":"rejected","error":<code>,"message":..,"command_id":..}
//   {"status":"error","error":<code>,"message":..[,"command_id":..]}
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "cqrs/result.hpp"

namespace cqrs::actors {

std::string error_reply(std::string_view code, std::string_view message,
                        std::string_view command_id = {});
std::string error_reply(const Error& error, std::string_view command_id = {});
std::string rejection_reply(std::string_view code, std::string_view message,
                            std::string_view command_id);

}  // namespace cqrs::actors
