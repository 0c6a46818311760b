#!/bin/sh
# Install a built Flowmill for this user on Linux, so that it opens with a double-click (in the
# desktop's terminal emulator) and from the application menu:
#
#   packaging/install-desktop.sh dist/onefile/flowmill          # the one file, copied
#   packaging/install-desktop.sh dist/folder/flowmill/flowmill  # the one folder, linked where it is
#
# It puts `flowmill` in ~/.local/bin, the icon in ~/.local/share/icons and the desktop entry, with
# the executable's full path, in ~/.local/share/applications. XDG_DATA_HOME and PREFIX_BIN change
# where.
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"
executable="${1:?usage: install-desktop.sh PATH/TO/flowmill}"
executable="$(cd "$(dirname "$executable")" && pwd)/$(basename "$executable")"
bin="${PREFIX_BIN:-$HOME/.local/bin}"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
mkdir -p "$bin" "$data/applications" "$data/icons/hicolor/256x256/apps" "$data/icons/hicolor/scalable/apps"
if [ -d "$(dirname "$executable")/_internal" ]; then
    ln -sf "$executable" "$bin/flowmill"        # one folder: the executable needs its libraries beside it
else
    install -m 0755 "$executable" "$bin/flowmill"
fi
install -m 0644 "$here/assets/flowmill.png" "$data/icons/hicolor/256x256/apps/flowmill.png"
install -m 0644 "$here/assets/flowmill.svg" "$data/icons/hicolor/scalable/apps/flowmill.svg"
sed "s|^Exec=flowmill$|Exec=$bin/flowmill|" "$here/assets/flowmill.desktop" > "$data/applications/flowmill.desktop"
chmod 0644 "$data/applications/flowmill.desktop"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
echo "installed: $bin/flowmill, and Flowmill in the application menu ($data/applications/flowmill.desktop)"
