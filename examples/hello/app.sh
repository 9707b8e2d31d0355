#!/bin/sh
echo "$GREETING from $(id -un) in $(pwd)"
