// The pipeline cache file is never fatal (vkdevice/cache_file.h): only a regular file of a
// sane size is read; a directory, a FIFO, a device node or a huge sparse file at its path is
// ignored with a warning naming the path, without hanging or reading it; writing over
// something that cannot be replaced is a warning too.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "vkdevice/cache_file.h"

namespace chorus {
namespace {

namespace fs = std::filesystem;

class CacheFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("chorus-cache-file-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const char* name) const { return (dir_ / name).string(); }

  fs::path dir_;
};

TEST_F(CacheFile, AMissingFileIsEmptyWithoutAWarning) {
  std::string warning;
  EXPECT_TRUE(vk::read_cache_file(path("none.bin"), warning).empty());
  EXPECT_EQ(warning, "");
}

TEST_F(CacheFile, ARegularFileRoundTrips) {
  const std::string data = "pipeline bytes";
  std::string warning;
  ASSERT_TRUE(vk::write_cache_file(path("sub/cache.bin"), std::span(data.data(), data.size()), "t", warning)) << warning;
  const std::vector<char> back = vk::read_cache_file(path("sub/cache.bin"), warning);
  EXPECT_EQ(std::string(back.begin(), back.end()), data);
  EXPECT_EQ(warning, "");
}

TEST_F(CacheFile, ADirectoryAtThePathIsIgnoredWithAWarningNamingIt) {
  fs::create_directories(path("cache.bin"));
  std::string warning;
  EXPECT_TRUE(vk::read_cache_file(path("cache.bin"), warning).empty());
  EXPECT_NE(warning.find(path("cache.bin")), std::string::npos) << warning;
  EXPECT_NE(warning.find("a directory"), std::string::npos) << warning;
  // Writing cannot rename over a directory: a warning, not an exception.
  const char byte = 1;
  EXPECT_FALSE(vk::write_cache_file(path("cache.bin"), std::span(&byte, 1), "t", warning));
  EXPECT_NE(warning.find(path("cache.bin")), std::string::npos) << warning;
  EXPECT_FALSE(fs::exists(path("cache.bin.tmpt"))) << "the temporary file was left behind";
}

TEST_F(CacheFile, AFifoWithoutAWriterIsIgnoredAtOnceInsteadOfBlocking) {
  ASSERT_EQ(::mkfifo(path("cache.bin").c_str(), 0600), 0);
  std::string warning;
  EXPECT_TRUE(vk::read_cache_file(path("cache.bin"), warning).empty());
  EXPECT_NE(warning.find("a FIFO (named pipe)"), std::string::npos) << warning;
}

TEST_F(CacheFile, ASymlinkToDevZeroIsNotReadWhole) {
  fs::create_symlink("/dev/zero", path("cache.bin"));
  std::string warning;
  EXPECT_TRUE(vk::read_cache_file(path("cache.bin"), warning).empty());
  EXPECT_NE(warning.find("a character device"), std::string::npos) << warning;
}

TEST_F(CacheFile, AHugeSparseFileIsRefusedByItsSizeWithoutReadingIt) {
  {
    std::ofstream touch(path("cache.bin"));
  }
  fs::resize_file(path("cache.bin"), 4ull << 30);  // 4 GiB of holes: no disk used
  std::string warning;
  EXPECT_TRUE(vk::read_cache_file(path("cache.bin"), warning).empty());
  EXPECT_NE(warning.find("4294967296 bytes"), std::string::npos) << warning;
  EXPECT_NE(warning.find(path("cache.bin")), std::string::npos) << warning;
}

TEST_F(CacheFile, AnUncreatableDirectoryIsAWarning) {
  { std::ofstream f(path("file")); }
  const char byte = 1;
  std::string warning;
  EXPECT_FALSE(vk::write_cache_file(path("file/chorus/cache.bin"), std::span(&byte, 1), "t", warning));
  EXPECT_NE(warning.find(path("file/chorus")), std::string::npos) << warning;
}

// A family of lists is bounded: unused for longer than the age, or beyond the newest `keep`,
// they go; a writer's old temporary file goes; everything else in the folder stays. Times are
// set on the files, so nothing depends on the clock's progress.
TEST_F(CacheFile, PruningKeepsTheNewestListsAndTouchesNothingElse) {
  using namespace std::chrono;
  const auto now = fs::file_time_type::clock::now();
  const auto make = [&](const std::string& name, fs::file_time_type::clock::duration age) {
    { std::ofstream f(dir_ / name); f << "x"; }
    fs::last_write_time(dir_ / name, now - age);
  };
  for (int i = 0; i < 10; ++i) make("pipelines-u-" + std::to_string(i) + ".list", hours(i));  // 0 newest
  make("pipelines-u-old.list", hours(24 * 61));
  make("pipelines-u-3.list.tmp77-1", hours(25));  // a dead writer's
  make("pipelines-u-4.list.tmp78-1", minutes(5));  // perhaps a live one's
  make("pipelines-u.bin", hours(24 * 400));         // another family
  make("calibration.tsv", hours(24 * 400));
  make("notpipelines-u-1.list", hours(24 * 400));
  fs::create_directories(dir_ / "pipelines-dir.list");  // not a regular file
  make("precious.txt", hours(24 * 400));
  fs::create_symlink(dir_ / "precious.txt", dir_ / "pipelines-link.list");  // a symlink: left alone

  EXPECT_EQ(vk::prune_cache_files(dir_.string(), "pipelines-", ".list", 6, hours(24 * 60)), 6u);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(fs::exists(dir_ / ("pipelines-u-" + std::to_string(i) + ".list")), i < 6) << i;
  EXPECT_FALSE(fs::exists(dir_ / "pipelines-u-old.list"));
  EXPECT_FALSE(fs::exists(dir_ / "pipelines-u-3.list.tmp77-1"));
  EXPECT_TRUE(fs::exists(dir_ / "pipelines-u-4.list.tmp78-1"));
  for (const char* kept : {"pipelines-u.bin", "calibration.tsv", "notpipelines-u-1.list", "pipelines-dir.list",
                           "pipelines-link.list", "precious.txt"})
    EXPECT_TRUE(fs::exists(dir_ / kept)) << kept;

  // A list used again (touched) is the newest: the next prune keeps it over the others.
  vk::touch_cache_file((dir_ / "pipelines-u-5.list").string());
  EXPECT_EQ(vk::prune_cache_files(dir_.string(), "pipelines-", ".list", 1, hours(24 * 60)), 5u);
  EXPECT_TRUE(fs::exists(dir_ / "pipelines-u-5.list"));
  EXPECT_FALSE(fs::exists(dir_ / "pipelines-u-0.list"));
  // A missing folder: nothing, no throw.
  EXPECT_EQ(vk::prune_cache_files((dir_ / "none").string(), "pipelines-", ".list", 1, hours(1)), 0u);
  vk::touch_cache_file((dir_ / "none" / "x.list").string());
}

}  // namespace
}  // namespace chorus
