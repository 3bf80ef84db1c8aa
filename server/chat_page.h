// server/chat_page.h — the chat page `chorus serve` answers GET / with (server/chat_page.cpp).
#pragma once

namespace chorus::server {

// The page: one self-contained HTML document (styles and script inline, nothing fetched from
// elsewhere) that chats through /v1/chat/completions with streaming.
const char* chat_page();

}  // namespace chorus::server
