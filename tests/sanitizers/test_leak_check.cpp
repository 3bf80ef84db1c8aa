// Built in the ASan flavour only (tests/CMakeLists.txt): the leak check's own set-up.
// A module that keeps an allocation in a global, as a Vulkan driver may, and is then unloaded
// must not count as a leak (keep_modules_loaded.cpp). Built without that file, this test
// reports the 128 bytes from "<unknown module>", as CI did for lavapipe on an AMD Zen CPU.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sanitizer/lsan_interface.h>

TEST(LeakCheck, AnUnloadedModulesGlobalAllocationIsNotALeak) {
  void* module = dlopen(CHORUS_LEAK_CHECK_MODULE, RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(module, nullptr) << dlerror();
  auto keep = reinterpret_cast<void (*)()>(dlsym(module, "chorus_leak_check_keep"));
  ASSERT_NE(keep, nullptr) << dlerror();
  keep();
  ASSERT_EQ(dlclose(module), 0);
  EXPECT_EQ(__lsan_do_recoverable_leak_check(), 0)
      << "LeakSanitizer reported the unloaded module's allocation: is keep_modules_loaded.cpp linked?";
}
