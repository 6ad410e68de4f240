#include "cli/flag_names.h"

#include <cctype>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"

namespace cohort {
namespace {

bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
}

// Whether `field` starts at `pos` of `text` as a whole word that NameFlags replaces.
bool IsFieldReference(const std::string& text, size_t pos, const std::string& field) {
  const size_t end = pos + field.size();
  if (pos > 0 && (IsNameChar(text[pos - 1]) || text[pos - 1] == '-')) return false;
  if (end < text.size() && IsNameChar(text[end])) return false;
  // A quoted word is a value, such as a column the user named "test_fraction".
  if (pos > 0 && text[pos - 1] == '\'' && end < text.size() && text[end] == '\'') return false;
  // A name with an underscore is no English word, so every occurrence is the field.
  if (field.find('_') != std::string::npos) return true;
  if (absl::EndsWith(absl::string_view(text).substr(0, pos), "options.")) return true;
  const absl::string_view rest = absl::string_view(text).substr(end);
  for (absl::string_view follower : {" = ", " is ", " must", " contains ", "['"}) {
    if (absl::StartsWith(rest, follower)) return true;
  }
  return false;
}

}  // namespace

std::string NameFlags(const std::string& message, const std::vector<FlagName>& flags) {
  std::string text = message;
  for (const FlagName& name : flags) {
    size_t pos = 0;
    while ((pos = text.find(name.field, pos)) != std::string::npos) {
      if (!IsFieldReference(text, pos, name.field)) {
        pos += name.field.size();
        continue;
      }
      size_t begin = pos;
      if (begin >= 8 && text.compare(begin - 8, 8, "options.") == 0) begin -= 8;
      text.replace(begin, pos + name.field.size() - begin, name.flag);
      pos = begin + name.flag.size();
    }
  }
  return text;
}

}  // namespace cohort
