// A module for test_leak_check: keeps one allocation in an exported global for the process's
// lifetime, as Mesa's lavapipe keeps its CPU topology.
#include <cstdlib>

extern "C" {
void* chorus_leak_check_kept = nullptr;
void chorus_leak_check_keep() { chorus_leak_check_kept = std::malloc(128); }
}
