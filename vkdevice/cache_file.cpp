#include "vkdevice/cache_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <utility>

#include "vkdevice/file_type.h"

namespace chorus::vk {

std::string cache_dir() {
  std::filesystem::path dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg)
    dir = xdg;
  else if (const char* home = std::getenv("HOME"); home && *home)
    dir = std::filesystem::path(home) / ".cache";
  else
    dir = std::filesystem::temp_directory_path();
  return (dir / "chorus").string();
}
namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::vector<char> read_cache_file(const std::string& path, std::string& warning, uint64_t max_bytes) {
  warning.clear();
  const std::string what = "ignoring the cache file " + path + ": ";
  // O_NONBLOCK: opening a FIFO without a writer returns at once instead of blocking.
  Fd f{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)};
  if (f.fd < 0) {
    if (errno != ENOENT && errno != ENOTDIR) warning = what + "cannot open it: " + std::strerror(errno);
    return {};
  }
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) {
    warning = what + "cannot stat it: " + std::strerror(errno);
    return {};
  }
  if (!S_ISREG(st.st_mode)) {
    warning = what + "it is " + describe_file_type(st.st_mode) + ", expected a regular file";
    return {};
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    warning = what + "it is " + std::to_string(st.st_size) + " bytes, more than the " + std::to_string(max_bytes) +
              " bytes a pipeline cache may be";
    return {};
  }
  std::vector<char> data(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::read(f.fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      warning = what + "cannot read it: " + std::strerror(errno);
      return {};
    }
    if (n == 0) break;  // shrank while we read: what we have is checked by the driver's header
    done += static_cast<size_t>(n);
  }
  data.resize(done);
  return data;
}

bool write_cache_file(const std::string& path, std::span<const char> data, const std::string& tmp_suffix,
                      std::string& warning) {
  warning.clear();
  const std::filesystem::path p = path;
  std::error_code ec;
  std::filesystem::create_directories(p.parent_path(), ec);
  if (ec) {
    warning = "could not write the cache file " + path + ": cannot create " + p.parent_path().string() + ": " +
              ec.message();
    return false;
  }
  const std::string tmp = path + ".tmp" + tmp_suffix;
  {
    // O_NOFOLLOW | O_NONBLOCK: whatever sits at the temporary name can neither redirect nor
    // block the write.
    Fd f{::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644)};
    if (f.fd < 0) {
      warning = "could not write the cache file " + tmp + ": " + std::strerror(errno);
      return false;
    }
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(f.fd, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        warning = "could not write the cache file " + tmp + ": " + std::strerror(n < 0 ? errno : EIO);
        ::unlink(tmp.c_str());
        return false;
      }
      done += static_cast<size_t>(n);
    }
    const int fd = std::exchange(f.fd, -1);
    if (::close(fd) != 0) {
      warning = "could not write the cache file " + tmp + ": " + std::strerror(errno);
      ::unlink(tmp.c_str());
      return false;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    warning = "could not write the cache file " + path + ": " + std::strerror(errno);
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

void touch_cache_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec))
    std::filesystem::last_write_time(path, std::filesystem::file_time_type::clock::now(), ec);
}

size_t prune_cache_files(const std::string& dir, std::string_view prefix, std::string_view suffix, size_t keep,
                         std::chrono::seconds max_age) {
  namespace fs = std::filesystem;
  using Clock = fs::file_time_type::clock;
  const auto now = Clock::now();
  std::vector<std::pair<fs::file_time_type, fs::path>> files;
  size_t removed = 0;
  const auto remove = [&](const fs::path& p) {
    std::error_code ec;
    if (fs::remove(p, ec)) ++removed;
  };
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  for (; !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() < prefix.size() + suffix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    std::error_code e2;
    if (!fs::is_regular_file(it->symlink_status(e2))) continue;  // never a directory, a symlink, a FIFO
    const auto when = it->last_write_time(e2);
    if (e2) continue;
    const size_t tmp = name.rfind(std::string(suffix) + ".tmp");
    if (tmp != std::string::npos && tmp >= prefix.size()) {  // a writer's leftover
      if (now - when > std::chrono::hours(24)) remove(it->path());
      continue;
    }
    if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    if (now - when > max_age)
      remove(it->path());
    else
      files.emplace_back(when, it->path());
  }
  if (files.size() > keep) {
    std::sort(files.begin(), files.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t i = keep; i < files.size(); ++i) remove(files[i].second);
  }
  return removed;
}

}  // namespace chorus::vk
