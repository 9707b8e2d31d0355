ARG BASE
FROM $BASE
# dirctx/out is a symlink to /etc: it must resolve inside the context.
RUN --mount=from=dirctx,source=out/hostname,target=/m cat /m
