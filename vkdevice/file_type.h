// vkdevice/file_type.h — how messages name what a path is when it is not the regular file
// expected (the pipeline cache, a model, a text). Header-only and free of Vulkan, so the
// GGUF reader's standalone fuzz build can use it too.
#pragma once

#include <sys/stat.h>

namespace chorus {

// "a directory", "a FIFO (named pipe)", "a character device", ... for a stat() st_mode.
inline const char* describe_file_type(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "an unknown kind of file";
}

}  // namespace chorus
