// server/scheduler.h — many requests, one model: the slots of `chorus serve` and the thread
// that owns their context.
//
// Owns: the Context (one sequence per slot, ContextOptions::n_seq = n_slots), the thread that
// is the only one to touch it, the bounded queue of requests waiting for a slot, and each
// request's generation (sampling, penalties, stop strings, log-probabilities).
//
// One step of the scheduler thread:
//   1. drop the slots whose client went away (Job::cancel) and give free slots to queued jobs,
//      preferring the free slot whose cached tokens share the longest prefix with the prompt
//      (prompt caching: Context::truncate keeps that prefix, only the rest is evaluated);
//   2. build one Context::decode call: one token for every slot that is generating, then the
//      next piece of each prompt still being read, while the step holds at most n_ubatch
//      tokens — so a step is ONE forward pass (one submit per device on any split) whatever
//      the number of active slots, and a long prompt is read in micro-batches between the
//      other slots' tokens instead of stalling them;
//   3. sample each generating slot's next token from its row of logits and hand the text to
//      its job (Job::next, read by the HTTP thread).
// Nothing here knows HTTP; server/server.h turns requests into jobs.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/model.h"
#include "engine/sampling.h"
#include "engine/tokenizer.h"

namespace chorus::server {

struct GenerationParams {
  SamplerParams sampling;          // temp, top_k, top_p, min_p, seed (repeat_penalty stays 1)
  float presence_penalty = 0;      // OpenAI's: logit -= presence * (count > 0) + frequency * count
  float frequency_penalty = 0;     //   over the tokens generated so far
  int32_t max_tokens = -1;         // -1: until an end-of-generation token or a full context
  std::vector<std::string> stop;   // the reply ends before the first of these (not included)
  uint32_t top_logprobs = 0;       // alternatives per token (with logprobs)
  bool logprobs = false;           // report each token's log-probability
  bool ignore_eos = false;         // never pick an end-of-generation token (llama.cpp's extension)
};

struct TopLogprob {
  std::string token;
  float logprob;
};
struct TokenLogprob {
  std::string token;               // the token's bytes
  float logprob;                   // log softmax of the (penalised) logits
  std::vector<TopLogprob> top;     // the top_logprobs most likely tokens
};

struct Usage {
  size_t prompt_tokens = 0;
  size_t completion_tokens = 0;
  size_t cached_tokens = 0;        // prompt tokens found in the slot's cache
};

// What a job hands its reader, in order.
struct Event {
  std::string text;                      // reply text (may be empty)
  std::vector<TokenLogprob> logprobs;    // one per token the text came from (with logprobs)
  bool done = false;
  std::string finish_reason;             // with done: "stop" or "length"
  Usage usage;                           // with done
  std::vector<float> embedding;          // an embedding job's result (with done)
  std::string error;                     // with done: the job failed (the message)
};

// One request, shared by the HTTP thread that reads it and the scheduler that runs it.
class Job {
 public:
  // Moves the events ready so far into `out`; waits at most `timeout` for the first. Returns
  // false when it timed out with nothing ready.
  bool next(std::vector<Event>& out, std::chrono::milliseconds timeout);
  // The client went away: the scheduler frees the job's slot at its next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  friend class Scheduler;
  void push(Event e);

  enum class Kind { generate, embed };
  Kind kind = Kind::generate;
  std::vector<TokenId> prompt;
  GenerationParams params;
  std::atomic<bool> cancelled_{false};
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Event> events_;
};

struct SchedulerOptions {
  uint32_t n_slots = 4;            // parallel sequences
  uint32_t n_ctx = 0;              // tokens per slot (0: the model's trained length, at most 4096)
  uint32_t n_ubatch = 512;         // tokens per step (one forward pass)
  uint32_t max_queue = 16;         // requests waiting for a slot; more are refused (QueueFull)
  bool serialise = false;          // ContextOptions::serialise
};

// submit() when every slot is busy and the queue is full.
struct QueueFull : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Counters for /metrics and tests; a snapshot taken by the scheduler thread after each step.
struct SchedulerStats {
  uint32_t slots = 0, active = 0, queued = 0;
  uint64_t jobs_started = 0, jobs_finished = 0, jobs_cancelled = 0, rejected_full = 0;
  uint64_t prompt_tokens = 0;      // prompt tokens evaluated
  uint64_t cached_tokens = 0;      // prompt tokens reused from a slot's cache
  uint64_t generated_tokens = 0;
  uint64_t steps = 0;              // decode calls
  uint64_t steps_single_pass = 0;  // steps that were one forward pass
  uint32_t max_segments = 0;       // the most sequences one step carried
  uint64_t steps_full = 0;         // steps that carried every slot
  ContextCounters context;
  std::vector<DeviceMemoryUse> memory;
  std::optional<split::CollectiveStats> collective;  // without the per-reduce samples
  double reduce_p50_us = 0;
};

class Scheduler {
 public:
  Scheduler(Model& model, const Tokenizer& tok, const SchedulerOptions& options);
  ~Scheduler();  // stops the thread; unfinished jobs end with an error event
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a generation from `prompt` (1 .. n_ctx - 1 tokens, checked by the caller). Throws
  // QueueFull when every slot is busy and max_queue jobs already wait.
  std::shared_ptr<Job> generate(std::vector<TokenId> prompt, const GenerationParams& params);
  // Queues an embedding: the mean over `tokens` of the final-norm hidden state.
  std::shared_ptr<Job> embed(std::vector<TokenId> tokens);

  SchedulerStats stats() const;
  uint32_t n_ctx() const { return n_ctx_; }
  uint32_t n_slots() const { return options_.n_slots; }

  // While held, the scheduler starts no step (queued jobs wait): lets a test line up several
  // requests so that they provably share steps. Also an operator's pause.
  void hold(bool on);
  // Waits until no slot is active and nothing is queued; false after `timeout`.
  bool wait_idle(std::chrono::milliseconds timeout) const;
  // Jobs whose client went away that no step has dropped yet (in a slot or queued).
  uint32_t cancelled_pending() const;
  // Waits until at least n jobs are queued; false after `timeout`.
  bool wait_queued(uint32_t n, std::chrono::milliseconds timeout) const;

 private:
  struct Slot;
  struct StepOutcome {
    uint64_t prompt_tokens = 0, generated = 0;
    std::vector<Slot*> ended;  // slots whose job ended this step
  };
  void enqueue(const std::shared_ptr<Job>& job);
  void loop();
  void admit();
  void start(Slot& s, std::shared_ptr<Job> job, size_t common);
  void step(std::unique_lock<std::mutex>& lock);
  uint32_t count_active() const;
  bool advance(Slot& s, std::span<const TokenId> evaluated, StepOutcome& out);
  void next_token(Slot& s, std::vector<float>& row, StepOutcome& out);
  void finish(Slot& s, const std::string& reason, const std::string& error, StepOutcome& out);
  void run_embedding(Slot& slot);
  void snapshot();

  Model& model_;
  const Tokenizer& tok_;
  SchedulerOptions options_;
  std::unique_ptr<Context> ctx_;   // touched only by the scheduler thread after construction
  uint32_t n_ctx_ = 0;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<TokenId> eog_;       // the vocabulary's end-of-generation tokens

  mutable std::mutex mutex_;       // guards queue_, stop_, held_, stats_
  mutable std::condition_variable wake_;     // work arrived, hold released, or stop
  mutable std::condition_variable changed_;  // stats changed (wait_idle, wait_queued)
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false, held_ = false;
  SchedulerStats stats_;
  std::chrono::steady_clock::time_point last_snapshot_;
  std::thread thread_;             // last: started when everything above exists
};

}  // namespace chorus::server
