/* Exit statuses of berth-helper beyond the container's own, mirrored in src/errors.ts.
 * They follow docker run's convention, which batch scripts already know. */
#ifndef BERTH_EXIT_CODES_H
#define BERTH_EXIT_CODES_H

#define BERTH_EXIT_SETUP 125 /* the container could not be set up; the message says why */
#define BERTH_EXIT_CANNOT_EXEC 126 /* the command exists but could not be executed */
#define BERTH_EXIT_NOT_FOUND 127 /* the command is not in the image */

#endif
