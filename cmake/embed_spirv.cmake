# Turns one SPIR-V binary into a C++ source holding it as a uint32_t array.
# Inputs: SPV (path), OUT (path), SYMBOL (C identifier).
file(READ "${SPV}" hex HEX)
string(LENGTH "${hex}" n_hex)
math(EXPR rem "${n_hex} % 8")
if(NOT rem EQUAL 0 OR n_hex EQUAL 0)
  message(FATAL_ERROR "${SPV}: SPIR-V size is not a whole number of 32-bit words")
endif()
math(EXPR n_words "${n_hex} / 8")
string(REGEX REPLACE "([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])" "0x\\4\\3\\2\\1u," words "${hex}")
file(WRITE "${OUT}.tmp" "// Generated from ${SPV}; do not edit.\n#include <cstddef>\n#include <cstdint>\nnamespace chorus::shaders::blob {\nextern const uint32_t ${SYMBOL}[${n_words}] = {${words}};\nstd::size_t sizeof_${SYMBOL}() { return ${n_words}; }\n}\n")
file(RENAME "${OUT}.tmp" "${OUT}")
