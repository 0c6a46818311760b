#!/bin/sh
# macOS: a double-click on this file opens Terminal.app, which runs Flowmill's terminal UI from
# the executable beside it (the local server starts with it and stops when it closes).
here="$(cd "$(dirname "$0")" && pwd)"
for candidate in "$here/flowmill" "$here/flowmill/flowmill" "$here/../flowmill"; do
    if [ -x "$candidate" ] && [ ! -d "$candidate" ]; then
        exec "$candidate" "$@"
    fi
done
echo "Flowmill: no flowmill executable beside $0" >&2
exit 1
