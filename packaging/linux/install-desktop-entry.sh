#!/bin/sh
# Add CXR Studio (this unpacked bundle) to the desktop menu of the current user.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor/256x256/apps"
mkdir -p "$apps" "$icons"
cp "$here/_internal/resources/icons/cxr-studio.png" "$icons/cxr-studio.png"
sed -e "s|^Exec=cxr-studio|Exec=\"$here/cxr-studio\"|" "$here/cxr-studio.desktop" > "$apps/cxr-studio.desktop"
echo "installed $apps/cxr-studio.desktop"
