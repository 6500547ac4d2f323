// The system SQLite (Debian: libsqlite3-dev), for the sidecar session store.
#include <sqlite3.h>
