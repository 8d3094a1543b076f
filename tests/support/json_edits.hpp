// Random small edits of valid JSON documents: text that is JSON about as often as not, with the
// mistakes people and programs make (a character lost, doubled or replaced). For checking the
// store's JSON checker against other parsers.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace cqrs::testing {

inline std::vector<std::string> random_json_edits(size_t count, uint32_t seed) {
  static const std::vector<std::string> kSeeds = {
      R"({"card_id":"c1","amount":5000,"currency":"EUR","tags":["a","b"],"n":null})",
      R"([1,-2.5e3,true,false,{"x":{"y":[]}},"\u00e9\n"])",
      "{\"name\":\"M\xC3\xBCller \xF0\x9F\x8E\x81\",\"s\":\"\\uD83C\\uDF81\"}"};
  // JSON's own characters, letters of its literals, a control character, DEL and UTF-8 bytes
  // (lead and continuation).
  static const std::string kAlphabet =
      "{}[]\",:\\ 0123456789.eE+-tfnulrasx\t\n\x01\x7F\xC3\xA9\xF0\xED";
  std::mt19937 random(seed);
  std::vector<std::string> texts;
  texts.reserve(count);
  for (size_t round = 0; round < count; ++round) {
    std::string text = kSeeds[random() % kSeeds.size()];
    int edits = 1 + static_cast<int>(random() % 3);
    for (int edit = 0; edit < edits && !text.empty(); ++edit) {
      size_t at = random() % text.size();
      char c = kAlphabet[random() % kAlphabet.size()];
      switch (random() % 3) {
        case 0:
          text[at] = c;
          break;
        case 1:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        default:
          text.erase(at, 1);
      }
    }
    texts.push_back(std::move(text));
  }
  return texts;
}

}  // namespace cqrs::testing
