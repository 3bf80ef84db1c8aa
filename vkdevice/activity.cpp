#include "vkdevice/activity.h"

#include <algorithm>

namespace chorus::vk {
namespace {

double per_token_ms(uint64_t ns, uint64_t tokens) {
  return tokens == 0 ? 0.0 : static_cast<double>(ns) / 1e6 / static_cast<double>(tokens);
}

}  // namespace

double ActivitySummary::busy_fraction() const {
  if (timed_wall_ns == 0) return 0.0;
  return std::clamp(static_cast<double>(busy_ns) / static_cast<double>(timed_wall_ns), 0.0, 1.0);
}

double ActivitySummary::busy_ms_per_token() const { return per_token_ms(busy_ns, timed_tokens); }

double ActivitySummary::wait_ms_per_token() const { return per_token_ms(timed_wall_ns - busy_ns, timed_tokens); }

void ActivityWindow::add(const ActivityStep& step) {
  steps_.push_back(step);
  while (steps_.size() > kActivitySteps) steps_.pop_front();
}

ActivitySummary ActivityWindow::summary() const {
  ActivitySummary s;
  for (const ActivityStep& st : steps_) {
    ++s.steps;
    s.tokens += st.tokens;
    s.wall_ns += st.wall_ns;
    if (!st.busy_ns) continue;
    ++s.timed_steps;
    s.timed_tokens += st.tokens;
    s.timed_wall_ns += st.wall_ns;
    s.busy_ns += std::min(*st.busy_ns, st.wall_ns);  // a step's busy time never exceeds its wall time
  }
  return s;
}

}  // namespace chorus::vk
