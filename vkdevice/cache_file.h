// vkdevice/cache_file.h — reading and writing the on-disk pipeline cache, never fatally.
//
// Owns: the rules for the cache file. It is an optimisation, so nothing about it may fail or
// hang a run: only a regular file of at most kMaxCacheFileBytes is read (it is opened with
// O_NONBLOCK, so a FIFO at its path cannot block); a directory, a device node (a symlink to
// /dev/zero), a FIFO, a socket, an oversized or unreadable file is ignored with a one-line
// warning naming the path. Writing goes to a temporary file renamed over the cache, and a
// failure is a warning.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace chorus::vk {

// chorus's cache folder: $XDG_CACHE_HOME/chorus, else ~/.cache/chorus, else <tmp>/chorus.
std::string cache_dir();

// Largest pipeline cache file read: a cache of every chorus kernel is a few MiB.
inline constexpr uint64_t kMaxCacheFileBytes = 256ull << 20;

// The bytes of the cache file at `path`; empty when there is none (silently) or when it is not
// something to read (then `warning` says why, naming the path, and the caller prints it).
std::vector<char> read_cache_file(const std::string& path, std::string& warning, uint64_t max_bytes = kMaxCacheFileBytes);

// Writes `data` to `path` through `path.tmpN` and a rename (N tells writers apart); creates the
// directory. Returns false with `warning` set (naming the path and the reason) on any failure.
bool write_cache_file(const std::string& path, std::span<const char> data, const std::string& tmp_suffix,
                      std::string& warning);

// Marks the cache file at `path` as used now (its modification time), so that pruning keeps
// it; a missing file or a failure changes nothing.
void touch_cache_file(const std::string& path);

// Bounds a family of cache files in `dir`, those whose names start with `prefix` and end with
// `suffix` (one per model and device placement, say, of which a user's cache would otherwise
// gather one more with every model, split and chorus build tried): removes the ones last used
// more than `max_age` ago, then the least recently used beyond the newest `keep`, and any
// temporary file of the family (`<name>.tmp...`, left by a writer that died) older than a day.
// Only regular files are removed (not symlinks); nothing else in `dir` is touched, and a failure is silent
// (another process may prune the same folder). Returns how many files it removed.
size_t prune_cache_files(const std::string& dir, std::string_view prefix, std::string_view suffix, size_t keep,
                         std::chrono::seconds max_age);

}  // namespace chorus::vk
