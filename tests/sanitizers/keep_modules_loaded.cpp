// Linked into every executable of the ASan flavour, and only there (CHORUS_SANITIZER_SOURCES in
// the top-level CMakeLists.txt).
//
// LeakSanitizer looks for pointers to each allocation in the loaded modules' data at exit. The
// Vulkan loader unloads the driver (dlclose) in vkDestroyInstance, and with it the driver's
// globals: an allocation the driver keeps for the process's lifetime in a global is then
// unreachable and reported as a leak whose frames lie in "<unknown module>", which no
// suppression can name. Mesa 22.3's lavapipe does this on AMD Zen CPUs (its CPU topology's L3
// affinity masks: 128 bytes, realloc'd once per process), which made every GPU suite fail the
// ASan stage on such a machine.
//
// A dlclose defined in the executable comes first in symbol lookup, so every unload in the
// process (the loader's, volk's) is this no-op: modules stay mapped, their globals are scanned,
// and an allocation still reachable from one is not a leak. A real leak (a pointer lost, a
// Vulkan object chorus never destroyed) is still reported, now with its module's name.
extern "C" int dlclose(void*) { return 0; }
