// The pipeline cache file is never fatal (vkdevice/cache_file.h): only a regular file of a
// sane size is read; a directory, a FIFO, a device node or a huge sparse file at its path is
// ignored with a warning naming the path, without hanging or reading it; writing over
// something that cannot be replaced is a warning too.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

}  // namespace
}  // namespace chorus
