ARG BASE
FROM $BASE
# dirctx/out is a symlink to /etc: it must resolve inside the context.
COPY --from=dirctx /out/hostname /x
