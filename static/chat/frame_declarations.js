// Generated from conversations/realtime/protocol.py (SERVER_FRAMES) by
// `python3 manage.py frame_declarations`: do not edit; a test checks it is current.
// type -> {field: {type, nullable?, values?, fields?, only_when?}}
export const SERVER_FRAMES = {
  "ack": {
    "client_id": {"type": "string"},
    "conversation": {"type": "string"},
    "message": {"type": "string"},
    "created": {"type": "boolean"},
    "replies": {"type": "array", "items": {"type": "string"}},
  },
  "reply_started": {
    "conversation": {"type": "string"},
    "reply": {"type": "string"},
    "model": {"type": "string"},
    "provider": {"type": "string"},
    "after_seq": {"type": "integer"},
  },
  "delta": {
    "reply": {"type": "string"},
    "seq": {"type": "integer"},
    "text": {"type": "string"},
  },
  "reply_queued": {
    "reply": {"type": "string"},
    "position": {"type": "integer"},
    "ahead": {"type": "integer"},
  },
  "reasoning_delta": {
    "reply": {"type": "string"},
    "seq": {"type": "integer"},
    "text": {"type": "string"},
    "redacted": {"type": "boolean"},
  },
  "reply_finished": {
    "conversation": {"type": "string"},
    "reply": {"type": "string"},
    "status": {"type": "string", "values": ["complete", "error", "interrupted", "stopped"]},
    "error_kind": {"type": "string", "nullable": true, "values": ["context_length", "internal", "length_limit", "model_unavailable", "moderation", "overloaded", "rate_limited", "timeout_first_token", "timeout_idle", "timeout_total", "upstream_connect", "upstream_error", "upstream_http", "upstream_stream"], "only_when": ["status", "error"]},
    "error": {"type": "string", "nullable": true},
    "last_seq": {"type": "integer"},
    "finish_reason": {"type": "string", "nullable": true},
    "usage": {"type": "object", "fields": {"prompt_tokens": {"type": "integer", "nullable": true}, "completion_tokens": {"type": "integer", "nullable": true}, "counted": {"type": "boolean"}}},
    "metrics": {"type": "object", "fields": {"ttft_ms": {"type": "number", "nullable": true}, "tokens_per_s": {"type": "number", "nullable": true}, "total_ms": {"type": "number", "nullable": true}, "first_answer_ms": {"type": "number", "nullable": true}, "reasoning_ms": {"type": "number", "nullable": true}, "queued_ms": {"type": "number", "nullable": true}}},
    "omitted_messages": {"type": "integer"},
    "context_tokens": {"type": "integer", "nullable": true},
  },
  "error": {
    "code": {"type": "string", "values": ["bad_frame", "frame_too_large", "internal", "invalid_field", "model_cannot_see", "not_continuable", "not_found", "prompt_moderated", "prompt_too_long", "reply_running", "session_ended", "too_many_attachments", "too_many_messages", "too_many_replies", "unavailable", "unknown_model", "unknown_type"]},
    "message": {"type": "string"},
    "ref": {"type": "string", "nullable": true},
  },
  "pong": {
  },
  "conversation_updated": {
    "conversation": {"type": "string"},
    "title": {"type": "string"},
  },
};
