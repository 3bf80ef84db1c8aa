#include "server/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <span>

namespace chorus::server {

bool Job::next(std::vector<Event>& out, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
  while (!events_.empty()) {
    out.push_back(std::move(events_.front()));
    events_.pop_front();
  }
  return true;
}

void Job::push(Event e) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(e));
  }
  ready_.notify_all();
}

// One sequence of the context and the job it is serving.
struct Scheduler::Slot {
  uint32_t seq = 0;
  std::shared_ptr<Job> job;            // null: free
  std::vector<TokenId> cached;         // the tokens the context holds for seq, in order
  size_t pos = 0;                      // next prompt token to evaluate (== prompt size: generating)
  TokenId next = kNoToken;             // the sampled token to evaluate in the next step
  std::optional<Sampler> sampler;
  std::map<TokenId, uint32_t> counts;  // generated tokens, for the presence/frequency penalties
  std::optional<Detokenizer> detok;
  std::string held;                    // text held back: it may be the start of a stop string
  Usage usage;
  uint64_t last_used = 0;              // step of its last job's start (least recently used wins ties)

  bool generating() const { return job && pos == job->prompt.size(); }
};

namespace {

// The length of the longest suffix of `text` that is a proper prefix of one of `stops`.
size_t held_back(const std::string& text, const std::vector<std::string>& stops) {
  size_t keep = 0;
  for (const std::string& s : stops)
    for (size_t n = std::min(text.size(), s.size() - 1); n > keep; --n)
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        keep = n;
        break;
      }
  return keep;
}

// log softmax of `row` at the chosen token, and the `top` most likely tokens.
TokenLogprob token_logprob(const Tokenizer& tok, std::span<const float> row, TokenId chosen, uint32_t top) {
  const float mx = *std::max_element(row.begin(), row.end());
  double sum = 0;
  for (const float v : row) sum += std::exp(static_cast<double>(v - mx));
  const auto lp = [&](TokenId t) { return static_cast<float>(static_cast<double>(row[t] - mx) - std::log(sum)); };
  TokenLogprob out{tok.piece(chosen), lp(chosen), {}};
  if (top > 0) {
    std::vector<TokenId> ids(row.size());
    std::iota(ids.begin(), ids.end(), 0);
    const size_t k = std::min<size_t>(top, ids.size());
    std::partial_sort(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(k), ids.end(),
                      [&](TokenId a, TokenId b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
    for (size_t i = 0; i < k; ++i) out.top.push_back({tok.piece(ids[i]), lp(ids[i])});
  }
  return out;
}

}  // namespace

Scheduler::Scheduler(Model& model, const Tokenizer& tok, const SchedulerOptions& options)
    : model_(model), tok_(tok), options_(options) {
  if (options_.n_slots == 0 || options_.n_ubatch == 0)
    throw std::invalid_argument("server: the slot count and the step size must be positive");
  ContextOptions co;
  co.n_ctx = options_.n_ctx;
  co.n_seq = options_.n_slots;
  co.n_ubatch = options_.n_ubatch;
  co.serialise = options_.serialise;
  ctx_ = std::make_unique<Context>(model_, co);
  n_ctx_ = ctx_->n_ctx();
  for (uint32_t i = 0; i < options_.n_slots; ++i) {
    slots_.push_back(std::make_unique<Slot>());
    slots_.back()->seq = i;
  }
  for (uint32_t t = 0; t < tok_.vocab().n_tokens(); ++t)
    if (tok_.vocab().is_eog(static_cast<TokenId>(t))) eog_.push_back(static_cast<TokenId>(t));
  stats_.slots = options_.n_slots;
  snapshot();
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
  const auto fail = [](const std::shared_ptr<Job>& j) {
    Event e;
    e.done = true;
    e.error = "the server is shutting down";
    j->push(std::move(e));
  };
  for (auto& s : slots_)
    if (s->job) fail(s->job);
  for (auto& j : queue_) fail(j);
}

std::shared_ptr<Job> Scheduler::generate(std::vector<TokenId> prompt, const GenerationParams& params) {
  auto job = std::make_shared<Job>();
  job->prompt = std::move(prompt);
  job->params = params;
  enqueue(job);
  return job;
}

std::shared_ptr<Job> Scheduler::embed(std::vector<TokenId> tokens) {
  auto job = std::make_shared<Job>();
  job->kind = Job::Kind::embed;
  job->prompt = std::move(tokens);
  enqueue(job);
  return job;
}

void Scheduler::enqueue(const std::shared_ptr<Job>& job) {
  if (job->prompt.empty() || job->prompt.size() >= n_ctx_)
    throw std::invalid_argument("an input needs 1 to " + std::to_string(n_ctx_ - 1) + " tokens");
  {
    std::lock_guard lock(mutex_);
    const uint32_t free_slots = stats_.slots - stats_.active;
    if (queue_.size() >= free_slots + options_.max_queue) {
      ++stats_.rejected_full;
      throw QueueFull("all " + std::to_string(stats_.slots) + " slots are busy and " + std::to_string(options_.max_queue) +
                      " requests are already waiting; try again later");
    }
    queue_.push_back(job);
    stats_.queued = static_cast<uint32_t>(queue_.size());
  }
  wake_.notify_all();
  changed_.notify_all();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

void Scheduler::hold(bool on) {
  {
    std::lock_guard lock(mutex_);
    held_ = on;
  }
  wake_.notify_all();
}

bool Scheduler::wait_idle(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return stats_.active == 0 && queue_.empty(); });
}

uint32_t Scheduler::cancelled_pending() const {
  std::lock_guard lock(mutex_);
  uint32_t n = 0;
  for (const auto& j : queue_) n += j->cancelled() ? 1 : 0;
  for (const auto& s : slots_) n += s->job && s->job->cancelled() ? 1 : 0;  // slots change only under mutex_
  return n;
}

bool Scheduler::wait_queued(uint32_t n, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return queue_.size() >= n; });
}

void Scheduler::loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || (!held_ && (!queue_.empty() || count_active() > 0)); });
    if (stop_) return;
    step(lock);
  }
}

// Called with the lock held: frees the slots of jobs whose client went away (their cached
// tokens stay valid) and gives free slots to queued jobs.
void Scheduler::admit() {
  for (auto& s : slots_)
    if (s->job && s->job->cancelled()) {
      s->job.reset();
      ++stats_.jobs_cancelled;
    }
  while (!queue_.empty()) {
    std::shared_ptr<Job> job = queue_.front();
    if (job->cancelled()) {
      queue_.pop_front();
      ++stats_.jobs_cancelled;
      continue;
    }
    // The free slot with the longest cached prefix of the prompt, then the least recently used.
    Slot* best = nullptr;
    size_t best_common = 0;
    for (auto& s : slots_) {
      if (s->job) continue;
      const size_t common = static_cast<size_t>(
          std::mismatch(s->cached.begin(), s->cached.end(), job->prompt.begin(), job->prompt.end()).first - s->cached.begin());
      if (!best || common > best_common || (common == best_common && s->last_used < best->last_used)) {
        best = s.get();
        best_common = common;
      }
    }
    if (!best) break;
    queue_.pop_front();
    start(*best, std::move(job), best_common);
  }
  stats_.queued = static_cast<uint32_t>(queue_.size());
}

// Puts a job into a slot whose cache shares `common` tokens with its prompt.
void Scheduler::start(Slot& s, std::shared_ptr<Job> job, size_t common) {
  s.job = std::move(job);
  s.last_used = stats_.steps + 1;
  ++stats_.jobs_started;
  // Keep the shared prefix, but evaluate at least the prompt's last token for its logits.
  const size_t keep = s.job->kind == Job::Kind::embed ? 0 : std::min(common, s.job->prompt.size() - 1);
  ctx_->truncate(s.seq, static_cast<uint32_t>(keep));
  s.cached.resize(keep);
  s.pos = keep;
  s.next = kNoToken;
  s.sampler.emplace(s.job->params.sampling);
  for (const TokenId t : s.job->prompt) s.sampler->accept(t);
  s.counts.clear();
  s.detok.emplace(tok_);
  for (const TokenId t : s.job->prompt) (void)s.detok->push(t);  // the reply's first piece keeps its space
  s.held.clear();
  s.usage = Usage{s.job->prompt.size(), 0, keep};
  stats_.cached_tokens += keep;
}

// Called with the lock held; releases it around the forward pass.
void Scheduler::step(std::unique_lock<std::mutex>& lock) {
  admit();
  // Embeddings run alone (their hidden state is read back for every token).
  for (auto& s : slots_)
    if (s->job && s->job->kind == Job::Kind::embed) {
      lock.unlock();
      run_embedding(*s);
      lock.lock();
      s->job.reset();
      ++stats_.jobs_finished;
    }

  // The step: one token per generating slot, then prompt pieces, at most n_ubatch tokens.
  std::vector<Context::Segment> segments;
  std::vector<Slot*> owners;
  uint32_t budget = options_.n_ubatch;
  for (auto& s : slots_)
    if (s->job && s->generating() && budget > 0) {
      segments.push_back({s->seq, std::span<const TokenId>(&s->next, 1), false});
      owners.push_back(s.get());
      --budget;
    }
  for (auto& s : slots_)
    if (s->job && !s->generating() && budget > 0) {
      const size_t n = std::min<size_t>(budget, s->job->prompt.size() - s->pos);
      segments.push_back({s->seq, std::span<const TokenId>(s->job->prompt).subspan(s->pos, n), false});
      owners.push_back(s.get());
      budget -= static_cast<uint32_t>(n);
    }
  stats_.active = count_active();
  if (segments.empty()) {
    changed_.notify_all();
    return;
  }

  lock.unlock();
  const uint64_t passes0 = ctx_->counters().forward_passes;
  std::vector<float> logits;
  std::string failure;
  try {
    logits = ctx_->decode(segments);
  } catch (const std::exception& e) {
    failure = e.what();
  }
  const bool single_pass = ctx_->counters().forward_passes == passes0 + 1;
  const size_t V = ctx_->config().n_vocab;
  StepOutcome out;
  for (size_t i = 0; i < owners.size(); ++i) {
    Slot& s = *owners[i];
    if (!failure.empty()) {
      ctx_->clear(s.seq);  // what the failed call left is unknown
      s.cached.clear();
      finish(s, "", "the model failed: " + failure, out);
    } else if (advance(s, segments[i].tokens, out)) {
      std::vector<float> row(logits.begin() + static_cast<std::ptrdiff_t>(i * V),
                             logits.begin() + static_cast<std::ptrdiff_t>((i + 1) * V));
      next_token(s, row, out);
    }
  }
  lock.lock();
  for (Slot* e : out.ended) e->job.reset();
  ++stats_.steps;
  if (single_pass) ++stats_.steps_single_pass;
  stats_.max_segments = std::max<uint32_t>(stats_.max_segments, static_cast<uint32_t>(segments.size()));
  if (segments.size() == slots_.size()) ++stats_.steps_full;
  stats_.prompt_tokens += out.prompt_tokens;
  stats_.generated_tokens += out.generated;
  stats_.jobs_finished += out.ended.size();
  stats_.active = count_active();
  stats_.context = ctx_->counters();
  // The memory and collective figures cost a copy of the reduce samples: a few times a second
  // while busy, and whenever the slots fall idle.
  if (stats_.active == 0 || std::chrono::steady_clock::now() - last_snapshot_ > std::chrono::milliseconds(500)) snapshot();
  changed_.notify_all();
}

uint32_t Scheduler::count_active() const {
  return static_cast<uint32_t>(std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return s->job != nullptr; }));
}

// Records the tokens a step evaluated for a slot; true when its logits row is to be sampled
// (a generating slot, or the last piece of a prompt).
bool Scheduler::advance(Slot& s, std::span<const TokenId> evaluated, StepOutcome& out) {
  if (s.generating()) {
    s.cached.push_back(s.next);
    return true;
  }
  s.cached.insert(s.cached.end(), evaluated.begin(), evaluated.end());
  s.pos += evaluated.size();
  out.prompt_tokens += evaluated.size();
  return s.generating();
}

// Samples a slot's next token from its logits row (penalties first), hands its text to the job
// (holding back what may be the start of a stop string) and ends the job when it is done.
void Scheduler::next_token(Slot& s, std::vector<float>& row, StepOutcome& out) {
  Job& job = *s.job;
  const GenerationParams& p = job.params;
  if (p.presence_penalty != 0 || p.frequency_penalty != 0)
    for (const auto& [t, n] : s.counts) row[t] -= p.presence_penalty + p.frequency_penalty * static_cast<float>(n);
  if (p.ignore_eos)
    for (const TokenId e : eog_) row[e] = -std::numeric_limits<float>::infinity();
  const TokenId t = s.sampler->sample(row);
  if (tok_.vocab().is_eog(t)) return finish(s, "stop", "", out);
  s.sampler->accept(t);
  ++s.counts[t];
  ++s.usage.completion_tokens;
  ++out.generated;
  Event e;
  if (p.logprobs) e.logprobs.push_back(token_logprob(tok_, row, t, p.top_logprobs));
  s.held += s.detok->push(t);
  size_t first = std::string::npos;
  for (const std::string& stop : p.stop) first = std::min(first, s.held.find(stop));
  if (first != std::string::npos) {  // the reply ends before the stop string
    e.text = s.held.substr(0, first);
    job.push(std::move(e));
    s.held.clear();
    (void)s.detok->flush();
    return finish(s, "stop", "", out);
  }
  const size_t keep = held_back(s.held, p.stop);
  e.text = s.held.substr(0, s.held.size() - keep);
  s.held.erase(0, s.held.size() - keep);
  job.push(std::move(e));
  if ((p.max_tokens >= 0 && s.usage.completion_tokens >= static_cast<size_t>(p.max_tokens)) || ctx_->length(s.seq) >= n_ctx_)
    return finish(s, "length", "", out);
  s.next = t;
}

// The job's last event; its slot is let go under the lock at the end of the step.
void Scheduler::finish(Slot& s, const std::string& reason, const std::string& error, StepOutcome& out) {
  Event e;
  if (error.empty()) {
    e.text = s.held + s.detok->flush();
    s.held.clear();
  }
  e.done = true;
  e.finish_reason = reason;
  e.usage = s.usage;
  e.error = error;
  s.job->push(std::move(e));
  out.ended.push_back(&s);
}

void Scheduler::run_embedding(Slot& s) {
  Job& job = *s.job;
  Event e;
  e.done = true;
  e.usage = Usage{job.prompt.size(), 0, 0};
  try {
    ctx_->truncate(s.seq, 0);
    s.cached.clear();
    e.embedding = ctx_->embed(s.seq, job.prompt);
    // The sequence now holds the input: a later prompt with the same start reuses it.
    s.cached = job.prompt;
  } catch (const std::exception& ex) {
    ctx_->clear(s.seq);
    s.cached.clear();
    e.error = std::string("the model failed: ") + ex.what();
  }
  job.push(std::move(e));
}

// Called with the lock held, by the scheduler thread (or the constructor, before it starts).
void Scheduler::snapshot() {
  last_snapshot_ = std::chrono::steady_clock::now();
  stats_.context = ctx_->counters();
  stats_.memory = ctx_->memory_use();
  stats_.collective = ctx_->collective_stats();
  if (stats_.collective) {
    stats_.reduce_p50_us = stats_.collective->latency_us(0.5);
    stats_.collective->latency_ns.clear();
    stats_.collective->wait_ns.clear();
    stats_.collective->sum_ns.clear();
  }
}

}  // namespace chorus::server
