// cqrs-migrate: applies the embedded schema migrations to a database and reports what it did.
//
//   cqrs-migrate [--db.url URL]      (default: DATABASE_URL, else libpq's PG* variables)
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cqrs/pg/migrate.hpp"

int main(int argc, char** argv) {
  std::string url;
  if (const char* env = std::getenv("DATABASE_URL")) url = env;
  for (int arg_idx = 1; arg_idx < argc; ++arg_idx) {
    std::string_view arg = argv[arg_idx];
    if (arg == "--db.url" && arg_idx + 1 < argc) {
      url = argv[++arg_idx];
    } else if (arg.starts_with("--db.url=")) {
      url = std::string(arg.substr(9));
    } else if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: cqrs-migrate [--db.url URL]   (default: DATABASE_URL, else libpq's PG*)\n");
      return 0;
    } else {
      std::fprintf(stderr,
                   "cqrs-migrate: unexpected argument '%s'\nusage: cqrs-migrate [--db.url URL]\n",
                   argv[arg_idx]);
      return 2;
    }
  }
  auto report = cqrs::pg::migrate(url);
  if (!report) {
    std::fprintf(stderr, "cqrs-migrate: %s\n", report.error().to_string().c_str());
    return 1;
  }
  if (report->applied.empty()) {
    std::printf("schema is up to date at version %d\n", report->version_after);
  } else {
    std::printf("migrated schema from version %d to %d (%zu applied)\n", report->version_before,
                report->version_after, report->applied.size());
  }
  return 0;
}
