#!/bin/sh
# Entrypoint of the project's containers in deploy/compose/production.yml: settings that have
# no *_FILE form of their own are given as SECRET__<SETTING>=<file>; each is exported as
# <SETTING>=<the file's content> for the process alone, then the image's command runs.
# The secret's value is thus never in the compose file, the image or `docker inspect`.
set -eu
for name in $(env | sed -n 's/^SECRET__\([A-Z0-9_]*\)=.*/\1/p'); do
    file=$(printenv "SECRET__$name")
    value=$(cat "$file")
    export "$name=$value"
    unset "SECRET__$name"
done
exec "$COMMAND" "$@"
