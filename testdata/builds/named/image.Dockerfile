ARG BASE
FROM $BASE
ARG WHAT
RUN echo from-$WHAT > /marker
