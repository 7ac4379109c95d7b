//! nano-banana: a self-hosted server for the Nano Banana Images API.
//!
//! Data flows one way: `http` → `domain` → `tasks` → `providers` / `storage`, with `accounts`
//! beside `tasks` (both below `http`, neither importing the other's callers). The module map:
//!
//! | module | owns | may import |
//! |---|---|---|
//! | `app` | wiring: builds every service from `Config`, serves until stopped | everything |
//! | `http` | routes, extractors, the error → response mapping | `accounts`, `tasks`, `domain`, `api`, `limits`, `storage` (readiness, image files), `telemetry` |
//! | `console` | the web console at `/`: server-rendered pages, sessions, CSRF, thumbnails | `http` (state, trace ids, admission helpers), `accounts`, `tasks`, `domain`, `api`, `dialects`, `storage` |
//! | `client` | the CLI's client commands (`generate`, `edit`, `task`, `admin`) | `api`, `accounts`, `storage`, `config`, `telemetry` |
//! | `accounts` | applications, tokens, credits, authentication, the admin service | `api`, `domain`, `storage` |
//! | `tasks` | the task lifecycle: admission, queue, workers, callbacks | `accounts` (the `Caller`), `domain`, `api`, `fetch`, `providers`, `storage`, `config` |
//! | `providers` | upstream image models behind one trait (Gemini, Vertex, OpenAI, the original service, the placeholder) and the routing between them | `domain`, `api` |
//! | `fetch` | the outbound-request policy (SSRF rules, size caps, `data:` URIs, image sniffing) | `domain`, `providers` (the input image type) |
//! | `storage` | the database (SQLite or PostgreSQL) and the image store (folder or S3) | nothing |
//! | `limits` | per-application rate limits (in process or Redis) | `api`, `telemetry` |
//! | `config` | one `Config` from flags, environment and file | the settings types of the modules it configures, `telemetry` |
//! | `domain` | validated request types, models, prices, the clock | nothing |
//! | `api` | the wire contract: codes, bodies, the task record | nothing |
//! | `fake` | a fake Gemini upstream (tests, `nano-banana fake-gemini`) | nothing |
//! | `telemetry` | logs, metrics, redaction | nothing |

pub mod accounts;
pub mod api;
pub mod app;
pub mod client;
pub mod config;
pub mod console;
pub mod dialects;
pub mod domain;
pub mod fake;
pub mod fetch;
pub mod http;
pub mod limits;
pub mod providers;
pub mod storage;
pub mod tasks;
pub mod telemetry;
